"""Spatial ops: hand-checked values, eagerly and inside tf.data.map (they must agree)."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import video_ops


def _clip(t=2, h=48, w=64):
  """uint8 clip whose pixel (y, x) in frame i has value (y + x + i) % 256 on every channel."""
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  frames = np.stack([(y + x + i) % 256 for i in range(t)]).astype(np.uint8)
  return tf.constant(np.repeat(frames[..., None], 3, axis=-1))


def test_center_crop_window_is_the_centred_square():
  assert video_ops.center_crop_window(48, 64).numpy().tolist() == [0, 8, 48, 48]
  assert video_ops.center_crop_window(80, 30).numpy().tolist() == [25, 0, 30, 30]


def test_random_crop_window_is_seeded_in_bounds_and_in_the_area_range():
  windows = [
    video_ops.random_crop_window(
      48, 64, tf.constant([s, 0], tf.int64), (0.3, 0.6), (0.75, 4 / 3)
    ).numpy()
    for s in range(20)
  ]
  again = video_ops.random_crop_window(
    48, 64, tf.constant([0, 0], tf.int64), (0.3, 0.6), (0.75, 4 / 3)
  ).numpy()
  np.testing.assert_array_equal(windows[0], again)
  assert len({tuple(w) for w in windows}) > 10
  for y0, x0, h, w in windows:
    assert y0 >= 0 and x0 >= 0 and y0 + h <= 48 and x0 + w <= 64
    assert 0.25 <= h * w / (48 * 64) <= 0.65  # the range, up to pixel rounding


def test_crop_and_resize_crops_exactly_and_skips_resampling_at_native_size():
  clip = _clip()
  out = video_ops.crop_and_resize(clip, tf.constant([0, 8, 48, 48]), 48).numpy()
  np.testing.assert_allclose(out, clip.numpy()[:, :, 8:56].astype(np.float32) / 255, atol=1e-6)
  small = video_ops.crop_and_resize(clip, tf.constant([0, 8, 48, 48]), 24)
  assert small.shape == (2, 24, 24, 3) and small.dtype == tf.float32


def test_crop_boxes_follow_the_window():
  window = tf.constant([0, 8, 48, 48])
  boxes = tf.constant(
    [
      [0.25, 0.25, 0.5, 0.5],  # pixels y 12..24, x 16..32
      [0.0, 0.0, 1.0, 0.1],
    ]
  )  # x 0..6.4: left of the window
  cropped, inside = video_ops.crop_boxes(boxes, window, 48, 64)
  np.testing.assert_allclose(cropped[0], [0.25, 8 / 48, 0.5, 24 / 48], atol=1e-6)
  assert inside.numpy().tolist() == [True, False]


def test_flip_and_normalize():
  clip = tf.constant(np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3))
  np.testing.assert_array_equal(video_ops.flip_left_right(clip)[:, :, 0], clip[:, :, 2])
  ones = tf.ones([1, 1, 1, 3])
  np.testing.assert_allclose(
    video_ops.normalize(ones, "imagenet")[0, 0, 0],
    [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
    rtol=1e-6,
  )
  np.testing.assert_array_equal(video_ops.normalize(ones, "unit"), ones)
  with pytest.raises(ValueError, match="Unknown normalization"):
    video_ops.normalize(ones, "zscore")


def test_ops_agree_eagerly_and_inside_tf_data():
  clip = _clip()

  def pipeline(frames):
    window = video_ops.random_crop_window(
      tf.shape(frames)[1],
      tf.shape(frames)[2],
      tf.constant([7, 3], tf.int64),
      (0.3, 0.6),
      (0.75, 1.3),
    )
    out = video_ops.crop_and_resize(frames, window, 32)
    return video_ops.normalize(video_ops.flip_left_right(out), "imagenet")

  eager = pipeline(clip).numpy()
  mapped = next(iter(tf.data.Dataset.from_tensors(clip).map(pipeline))).numpy()
  np.testing.assert_allclose(mapped, eager, rtol=1e-6, atol=1e-6)
