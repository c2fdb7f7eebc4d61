"""The temporal-localization head, its targets, losses and post-processing (hand-computed), and a
training run on synthetic features that must learn to localize."""

from __future__ import annotations

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import temporal_localization as tal_config
from svilm import feature_store
from svilm import losses
from svilm.evaluators import temporal_localization_eval
from svilm.models import localization_head
from svilm.trainers import trainer


def test_pyramid_points_and_targets_by_hand():
  # L = 8, two levels: level 0 centres 0.5 .. 7.5 (stride 1), level 1 centres 1, 3, 5, 7
  # (stride 2); ranges [0, 2) and [2, inf).
  points = localization_head.pyramid_points(8, 2, (0, 2, -1))
  np.testing.assert_array_equal(
    points["centre"], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 1, 3, 5, 7]
  )
  np.testing.assert_array_equal(points["stride"], [1] * 8 + [2] * 4)
  # Segment [2, 5] of class 3, segment [0, 8] of class 1, and a padding slot.
  segments = jnp.array([[[2.0, 5.0], [0.0, 8.0], [0.0, 0.0]]])
  labels = jnp.array([[3, 1, -1]])
  cls, reg = localization_head.assign_targets(segments, labels, points, centre_radius=1.5)
  expected = np.full(12, -1)
  # Level 0: only c = 3.5 has its farther boundary (1.5 away) within [0, 2) of [2, 5]; c = 2.5
  # and 4.5 reach 2.5; nothing of [0, 8] (reach >= 4) fits level 0.
  expected[3] = 3
  # Level 1 (centre sampling radius 3 about the midpoints 3.5 and 4): c = 1 -> [0, 8] (reach
  # 7); c = 3 -> both qualify (reach 2 and 5), the shorter [2, 5] wins; c = 5 -> [0, 8]
  # ([2, 5] has c on its end, not strictly inside); c = 7 -> [0, 8].
  expected[8:] = [1, 3, 1, 1]
  np.testing.assert_array_equal(cls[0], expected)
  want = np.zeros((12, 2))
  want[3] = [1.5, 1.5]  # (3.5 - 2, 5 - 3.5) / 1
  want[8:] = [[0.5, 3.5], [0.5, 1.0], [2.5, 1.5], [3.5, 0.5]]  # (c - a, b - c) / 2
  np.testing.assert_allclose(reg[0], want)


def test_focal_and_diou_losses_by_hand():
  # p = sigmoid(0) = 0.5: target 1 -> 0.25 * 0.5^2 * log 2; target 0 -> 0.75 * 0.5^2 * log 2.
  focal = losses.sigmoid_focal_loss(jnp.zeros(2), jnp.array([1, 0]), alpha=0.25, gamma=2.0)
  np.testing.assert_allclose(focal, [0.0625 * math.log(2), 0.1875 * math.log(2)], rtol=1e-6)
  # A confident right answer costs almost nothing; large logits stay finite.
  assert float(losses.sigmoid_focal_loss(jnp.array(50.0), jnp.array(1))) < 1e-20
  assert np.isfinite(float(losses.sigmoid_focal_loss(jnp.array(-200.0), jnp.array(1))))
  # pred (1, 1), target (1, 3): intersection 2, union 4, hull 4, midpoints 0 and 1 apart:
  # 1 - 2/4 + 1/16. pred (2, 3), target (1, 3): intersection 1 + 3, union 5, hull 5,
  # midpoints 0.5 and 1 apart: 1 - 4/5 + 0.25/25.
  diou = losses.segment_diou_loss(jnp.array([[1.0, 1.0], [2.0, 3.0]]), jnp.array([[1.0, 3.0]] * 2))
  np.testing.assert_allclose(diou, [0.5625, 1 - 4 / 5 + 0.25 / 25], rtol=1e-6)


def test_postprocess_decodes_seconds_and_suppresses_duplicates():
  config = tal_config.get_config("tiny").temporal_localization
  points = localization_head.pyramid_points(8, 2, (0, 2, -1))
  logits = np.full((12, 2), -20.0)
  offsets = np.zeros((12, 2))
  # Point 9 (c = 3, stride 2) predicts class 1 over (3 - 0.5 * 2, 3 + 1 * 2) = [2, 5] steps;
  # point 3 (c = 3.5, stride 1) the same segment a little less surely.
  logits[9, 1], offsets[9] = 4.0, [0.5, 1.0]
  logits[3, 1], offsets[3] = 2.0, [1.5, 1.5]
  out = temporal_localization_eval.postprocess(
    logits, offsets, points, duration=16.0, classes=["a", "b"], tal=_with(config, num_steps=8)
  )
  # 8 steps over 16 s: 2 s per step, so [2, 5] steps = [4, 10] s. The duplicate keeps a
  # Gaussian-decayed score: tIoU 1 -> sigmoid(2) * exp(-1 / 0.5).
  assert out[0] == {
    "label": "b",
    "score": pytest.approx(1 / (1 + math.exp(-4))),
    "segment": [4.0, 10.0],
  }
  assert out[1]["segment"] == [4.0, 10.0]
  assert out[1]["score"] == pytest.approx(1 / (1 + math.exp(-2)) * math.exp(-2))
  assert len(out) == 2  # every other point and class is under pre_nms_threshold


def _with(config, **values):
  config = config.copy_and_resolve_references()
  config.update(values)
  return config


def _synthetic_features(directory, num_videos: int, seed: int) -> None:
  """A feature directory in svilm/feature_store.py's format whose features show the actions:
  one channel per class is 1 inside each segment (plus noise), so a head that learns
  anything localizes them."""
  rng = np.random.default_rng(seed)
  classes = ["jump", "spin", "wave"]
  videos, database = {}, {}
  for i in range(num_videos):
    split = "train" if i < num_videos * 3 // 4 else "val"
    num_windows, duration = 20, 10.0
    centres = (np.arange(num_windows) + 0.5) * duration / num_windows
    features = rng.normal(0, 0.1, (num_windows, 8)).astype(np.float32)
    start = rng.uniform(0, 5)
    segment = [float(start), float(start + rng.uniform(2, 5))]
    label = int(rng.integers(len(classes)))
    features[(centres >= segment[0]) & (centres <= segment[1]), label] += 1.0
    video_id = f"v{i:03d}"
    relative = feature_store.video_file(split, video_id)
    feature_store.write_npy_atomic(os.path.join(directory, relative), features)
    videos[video_id] = dict(
      split=split,
      file=relative,
      fps=2.0,
      num_frames=20,
      duration=duration,
      windows=[[c - 0.25, c + 0.25] for c in centres],
    )
    database[video_id] = dict(
      subset=feature_store.subset_of(split),
      duration=duration,
      annotations=[{"segment": segment, "label": classes[label]}],
    )
  feature_store.write_json_atomic(
    os.path.join(directory, feature_store.INDEX),
    dict(format=feature_store.FORMAT, feature_dim=8, classes=classes, videos=videos),
  )
  feature_store.write_json_atomic(
    os.path.join(directory, feature_store.GROUND_TRUTH), {"database": database}
  )


def test_head_learns_to_localize_synthetic_actions(shapesworld_cache, tmp_path):
  features = tmp_path / "features"
  _synthetic_features(str(features), 64, seed=0)
  config = tal_config.get_config("tiny")
  config.data.shapesworld_dir = shapesworld_cache
  config.model.video.width = 8  # the synthetic features' dimension (feature_dim)
  config.model.video.num_heads = 2
  tal = config.temporal_localization
  tal.features = str(features)
  tal.num_classes = 3
  tal.num_steps = 16
  config.total_steps = 150
  config.batch_size = 16
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 10
  config.checkpoint_every_steps = 150
  config.log_every_steps = 50
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  # Chance is far below: the blank control (zero features) keeps only the head's priors.
  assert results["tal/average_mAP"] > 0.4, results
  assert results["tal/average_mAP"] > results["tal_blank/average_mAP"] + 0.2, results
  assert results["tal/num_videos"] == 16
  with open(tmp_path / "run" / temporal_localization_eval.PREDICTIONS_FILE) as f:
    predictions = json.load(f)
  assert sorted(predictions["results"]) == [f"v{i:03d}" for i in range(48, 64)]
  first = predictions["results"]["v048"][0]
  assert set(first) == {"label", "score", "segment"} and first["label"] in ("jump", "spin", "wave")
