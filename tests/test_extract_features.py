"""Feature extraction (svilm/feature_extraction.py, svilm/extract_features.py) and the feature
directory format (svilm/feature_store.py): windows, resampling, ground truth from the world's
segments, and an interrupted extraction that a rerun of the CLI completes to the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import temporal_localization as tal_config
from data_pipelines.shapesworld import build as shapesworld_build
from data_pipelines.shapesworld import text as shapesworld_text
from svilm import feature_extraction
from svilm import feature_store
from tests.conftest import REPO_ROOT


def test_windows_files_and_resampling_by_hand():
  # 96 frames, windows of 16 every 4: starts 0, 4, ..., 80 (the last ends on frame 96).
  np.testing.assert_array_equal(feature_store.window_starts(96, 16, 4), np.arange(21) * 4)
  assert feature_store.window_starts(10, 16, 4).tolist() == [0]  # shorter than one window
  assert feature_store.window_starts(18, 16, 4).tolist() == [0, 4]  # the last runs past 18
  assert feature_store.video_file("val", "val-000003") == os.path.join("val", "val-000003.npy")
  unsafe = feature_store.video_file("train", "a/b#1")
  assert unsafe.startswith(os.path.join("train", "a_b_1-")) and unsafe.endswith(".npy")
  assert unsafe != feature_store.video_file("train", "a_b_1")
  # Windows centred at 1 s and 3 s with features 0 and 2, 4 steps over 4 s (centres 0.5, 1.5,
  # 2.5, 3.5): 0 (before the first centre), 0.5, 1.5, 2 (after the last).
  steps = feature_store.resample(np.array([[0.0], [2.0]]), np.array([[0, 2], [2, 4]]), 4.0, 4)
  np.testing.assert_allclose(steps[:, 0], [0.0, 0.5, 1.5, 2.0])


@pytest.fixture(scope="module")
def tiny_source(shapesworld_cache):
  config = tal_config.get_config("tiny")
  config.data.shapesworld_dir = shapesworld_cache
  root, splits = feature_extraction.feature_source(config)
  params, source = feature_extraction.encoder_params(config, "random")
  return config, root, splits, params, feature_extraction.feature_settings(config, source)


def _extract(tiny_source, output):
  config, root, splits, params, settings = tiny_source
  return feature_extraction.extract(
    config, params, shard_dir=root, splits=splits, output=str(output), settings=settings
  )


def _files(directory) -> dict[str, bytes]:
  out = {}
  for base, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(base, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


def test_features_windows_and_ground_truth(tiny_source, tmp_path):
  config, *_ = tiny_source
  stats = _extract(tiny_source, tmp_path)
  world = config.data.shapesworld
  assert stats["videos"] == world.num_train + world.num_val and stats["resumed"] == 0
  index = feature_store.read_index(str(tmp_path))
  assert index["classes"] == list(shapesworld_text.ACTIONS)
  assert index["feature_dim"] == config.model.video.width
  entry = index["videos"]["val-000000"]
  # 48 frames at 8 fps, windows of 16 frames every 4: 9 windows, the first [0, 2) s.
  assert (entry["num_frames"], entry["duration"], len(entry["windows"])) == (48, 6.0, 9)
  assert entry["windows"][0] == [0.0, 2.0] and entry["windows"][-1] == [4.0, 6.0]
  features = np.load(tmp_path / entry["file"])
  assert features.shape == (9, config.model.video.width) and features.dtype == np.float32
  assert np.all(np.isfinite(features)) and np.std(features, axis=0).mean() > 0
  # The ground truth is the world's phases, in seconds, under ActivityNet's subset names.
  with open(tmp_path / feature_store.GROUND_TRUTH) as f:
    database = json.load(f)["database"]
  assert {v["subset"] for v in database.values()} == {"training", "validation"}
  scene = shapesworld_build.scene_for(world, "val", 0)
  expected = {(s.start / world.fps, s.end / world.fps, s.action) for s in scene.segments}
  got = {
    (a["segment"][0], a["segment"][1], a["label"]) for a in database["val-000000"]["annotations"]
  }
  assert got == expected


def test_interrupted_extraction_resumes_to_identical_bytes(tiny_source, tmp_path, monkeypatch):
  config, root, *_ = tiny_source
  _extract(tiny_source, tmp_path / "whole")

  # The process dies while writing the 6th video: 5 .npy files exist, no index.
  written = []
  original = feature_store.write_npy_atomic

  def die_on_sixth(path, array):
    if len(written) == 5:
      with open(path + ".tmp.npy", "wb") as f:
        f.write(b"half a file")  # what a kill mid-write leaves
      raise KeyboardInterrupt
    written.append(path)
    original(path, array)

  with monkeypatch.context() as patch:
    patch.setattr(feature_store, "write_npy_atomic", die_on_sixth)
    with pytest.raises(KeyboardInterrupt):
      _extract(tiny_source, tmp_path / "resumed")
  assert not (tmp_path / "resumed" / feature_store.INDEX).exists()

  # The same command a user would rerun completes the set.
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "svilm.extract_features",
      "--config=configs/temporal_localization.py:tiny",
      f"--config.data.shapesworld_dir={config.data.shapesworld_dir}",
      "--init_from=random",
      f"--output={tmp_path / 'resumed'}",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert "(5 already there)" in run.stdout
  resumed = {k: v for k, v in _files(tmp_path / "resumed").items() if not k.endswith(".tmp.npy")}
  assert resumed == _files(tmp_path / "whole")

  # Other settings into the same directory are refused, naming what differs.
  other = config.copy_and_resolve_references()
  other.features.stride_frames = 8
  params, source = feature_extraction.encoder_params(other, "random")
  with pytest.raises(ValueError, match="stride_frames"):
    feature_extraction.extract(
      other,
      params,
      shard_dir=root,
      splits=["train"],
      output=str(tmp_path / "whole"),
      settings=feature_extraction.feature_settings(other, source),
    )
