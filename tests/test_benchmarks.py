"""The benchmark scripts run end to end (tiny settings), so they cannot rot unnoticed."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def test_input_pipeline_benchmark_reports_every_figure():
  result = subprocess.run(
      [sys.executable, "benchmarks/input_pipeline.py", "--resolutions=32", "--num_frames=4",
       "--batches=2", "--batch_size=2", "--clips=8"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ("pipeline_frames_per_sec_per_core@32", "pipeline_frames_per_sec_all_cores@32",
              "default_step_frames_per_sec_cpu", "paper_h100_frames_per_sec_at_40pct_mfu"):
    assert figures[key] > 0, key
  assert 2e12 < figures["paper_flops_per_clip"] < 4e12   # ViT-B, 3136 tokens + BERT-base


def test_train_step_benchmark_reports_mfu():
  result = subprocess.run(
      [sys.executable, "benchmarks/train_step.py", "--config=configs/pretrain.py:tiny",
       "--steps=2", "--repeats=2", "--warmup=1"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ("step_time_ms", "flops_per_step", "peak_flops", "mfu", "examples_per_sec",
              "peak_memory_bytes"):
    assert figures[key] > 0, key
  assert figures["step_time_min_ms"] <= figures["step_time_ms"] <= figures["step_time_max_ms"]
  assert figures["mfu"] == pytest.approx(
      figures["flops_per_step"] / (figures["step_time_ms"] / 1e3) / figures["peak_flops"])
  assert figures["mfu"] < 1.5      # a bound on nonsense, not a speed assertion
