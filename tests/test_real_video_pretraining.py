"""Pretraining from shards of real (PyAV-encoded) videos: build -> validate -> svilm.main."""

import csv
import json
import math

from data_pipelines import build_shards
from data_pipelines import validate
from tests.conftest import devices_env
from tests.conftest import run_main
from tests.test_build_shards import H264
from tests.test_build_shards import _write_video

COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("ball", "box", "car")


def _make_split(root, split, count, offset):
  rows = []
  for i in range(count):
    name = f"{split}_{i}.mp4"
    codec = H264 if i % 2 else "mpeg4"
    _write_video(str(root / name), codec, 64 + 16 * (i % 3), 48, 8, 16 + i % 4)
    n = i + offset
    rows.append(
      {
        "video": name,
        "caption": f"a {COLOURS[n % 4]} {SHAPES[n % 3]} rolls past "
        f"a {COLOURS[(n + 1) % 4]} {SHAPES[(n + 2) % 3]}",
      }
    )
  path = root / f"{split}.csv"
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["video", "caption"])
    writer.writeheader()
    writer.writerows(rows)
  return str(path)


def test_pretraining_runs_on_built_shards_of_real_video(tmp_path):
  videos, shards, workdir = tmp_path / "videos", str(tmp_path / "shards"), tmp_path / "run"
  videos.mkdir()
  for split, count, offset, vocab in (("train", 16, 0, 64), ("val", 8, 100, 0)):
    summary = build_shards.build(
      _make_split(videos, split, count, offset),
      str(videos),
      shards,
      split=split,
      num_shards=2,
      fps=8.0,
      short_side=48,
      tokenizer_vocab_size=vocab,
    )
    assert summary["clips"] == count and summary["skipped"] == 0, summary["line"]
  report = validate.validate([shards])
  assert report.ok and report.num_records == 24, [str(p) for p in report.problems]

  flags = [
    "--config=configs/pretrain.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.path={shards}",
    "--config.batch_size=4",
    "--config.total_steps=4",
    "--config.eval.batch_size=4",
    "--config.eval.max_clips=0",
  ]
  env = devices_env(2)
  result = run_main(*flags, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / "eval_results.json") as f:
    results = json.load(f)
  assert results["step"] == 4
  assert results["retrieval/num_clips"] == 8  # 8 distinct held-out captions
  assert 0.0 <= results["retrieval/t2v_R@1"] <= 1.0
  assert results["grounding/num_pointing"] == 0  # real video carries no boxes
  assert math.isnan(results["grounding/pointing_acc"])
  assert 0.0 <= results["temporal_grouping/accuracy"] <= 1.0
  assert (workdir / "checkpoints" / "4").is_dir()
