"""The benchmark scripts run end to end (tiny settings), so they cannot rot unnoticed.

They run on one device and share the session's compilation cache (conftest.one_device_env):
the tiny config's train step, which all three time, is compiled once.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _figures(*argv: str, env: dict) -> dict:
  """Runs `python ARGV...` from the repository root; it must succeed, and its last stdout
  line is the benchmark's JSON object of figures, returned."""
  result = subprocess.run(
    [sys.executable, *argv],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_input_pipeline_benchmark_reports_every_figure(one_device_env):
  figures = _figures(
    "benchmarks/input_pipeline.py",
    "--resolutions=32",
    "--num_frames=4",
    "--batches=2",
    "--batch_size=2",
    "--clips=8",
    "--step_variant=tiny",
    "--step_steps=2",
    env=one_device_env,
  )
  for key in (
    "pipeline_frames_per_sec_per_core@32",
    "pipeline_frames_per_sec_all_cores@32",
    "default_step_frames_per_sec_cpu",
    "paper_h100_frames_per_sec_at_40pct_mfu",
  ):
    assert figures[key] > 0, key
  assert 2e12 < figures["paper_flops_per_clip"] < 4e12  # ViT-B, 3136 tokens + BERT-base


def test_train_step_benchmark_reports_mfu(one_device_env):
  figures = _figures(
    "benchmarks/train_step.py",
    "--config=configs/pretrain.py:tiny",
    "--steps=2",
    "--repeats=2",
    "--warmup=1",
    env=one_device_env,
  )
  for key in (
    "step_time_ms",
    "flops_per_step",
    "peak_flops",
    "mfu",
    "examples_per_sec",
    "peak_memory_bytes",
  ):
    assert figures[key] > 0, key
  assert figures["step_time_min_ms"] <= figures["step_time_ms"] <= figures["step_time_max_ms"]
  assert figures["mfu"] == pytest.approx(
    figures["flops_per_step"] / (figures["step_time_ms"] / 1e3) / figures["peak_flops"]
  )
  assert figures["mfu"] < 1.5  # a bound on nonsense, not a speed assertion


def test_compiler_options_benchmark_interleaves_variants_and_rejects_unknown_options(
  one_device_env,
):
  command = [
    sys.executable,
    "benchmarks/compiler_options.py",
    "--config=configs/pretrain.py:tiny",
    "--steps=1",
    "--repeats=2",
    "--warmup=1",
  ]
  variants = _figures(
    *command[1:], '--variant=fast={"xla_cpu_enable_fast_math": true}', env=one_device_env
  )["variants"]
  assert [v["name"] for v in variants] == ["baseline", "fast", "baseline (again)"]
  assert variants[1]["options"] == {"xla_cpu_enable_fast_math": True}
  assert variants[0]["ratio"] == 1.0
  for v in variants:
    assert 0 < v["min_ms"] <= v["step_ms"] <= v["max_ms"]
    assert v["ratio"] == pytest.approx(v["step_ms"] / variants[0]["step_ms"])
  bad = subprocess.run(
    command + ['--variant=typo={"xla_cpu_no_such_option": 1}'],
    cwd=REPO_ROOT,
    env=one_device_env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert bad.returncode != 0 and "xla_cpu_no_such_option" in bad.stderr


def test_compiler_options_variant_parsing():
  from benchmarks import compiler_options

  assert compiler_options.parse_variant('a={"x": 1}') == ("a", {"x": 1})
  for text, message in (('{"x": 1}', "NAME=JSON"), ("a=[1]", "JSON object"), ("a={x}", "not JSON")):
    with pytest.raises(ValueError, match=message):
      compiler_options.parse_variant(text)


def test_feature_extraction_benchmark_reports_every_figure(one_device_env, shapesworld_cache):
  figures = _figures(
    "benchmarks/feature_extraction.py",
    "--config=configs/temporal_localization.py:tiny",
    f"--config.data.shapesworld_dir={shapesworld_cache}",
    "--videos=2",
    "--repeats=1",
    env=one_device_env,
  )
  assert figures["windows"] == 18  # 2 videos of 48 frames: 9 windows of 16 frames every 4
  for name in ("decode", "encode", "total"):
    assert figures[f"{name}_windows_per_sec"] > 0, name
  assert figures["decode_share_of_total"] > 0


def test_ab_step_benchmark_times_both_values(one_device_env):
  figures = _figures(
    "benchmarks/ab_step.py",
    "--config=configs/pretrain.py:tiny",
    "--key=model.text_one_call",
    "--values=false,true",
    "--blocks=2",
    "--steps=1",
    "--warmup=0",
    env=one_device_env,
  )
  assert figures["ratio_to_first@false"] == 1.0
  assert figures["step_time_ms@true"] > 0 and figures["ratio_to_first@true"] > 0
