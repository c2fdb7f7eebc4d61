"""Clip-consistent spatial ops for the input pipeline (pure TF; eager and inside tf.data.map).

Every op treats a clip [T, H, W, 3] as one image: the crop window and the flip are drawn once
per clip, so objects do not jump between frames. Windows are (y0, x0, height, width) in pixels
of the decoded frames; randomness is stateless (seeded per example), so a clip's augmentation
is a pure function of (seed, stream index) and survives resume unchanged.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

# ImageNet statistics, the usual choice when initialising from image models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("unit", "imagenet")


def decode_jpeg_frames(jpegs: tf.Tensor) -> tf.Tensor:
  """JPEG strings [T] -> uint8 [T, H, W, 3] (all frames of a clip share one size)."""
  return tf.map_fn(
    lambda x: tf.io.decode_jpeg(x, channels=3),
    jpegs,
    fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
  )


def center_crop_window(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """The largest centred square: int32 (y0, x0, side, side)."""
  side = tf.minimum(height, width)
  return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def random_crop_window(
  height: tf.Tensor,
  width: tf.Tensor,
  seed: tf.Tensor,
  area_range: Sequence[float],
  aspect_ratio_range: Sequence[float],
) -> tf.Tensor:
  """Inception-style random resized crop window: int32 (y0, x0, h, w).

  The window covers a fraction of the frame area drawn from `area_range` with an aspect
  ratio (width / height) from `aspect_ratio_range`; `seed` is a stateless [2] int seed.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.stack([height, width, 3]),
    bounding_boxes=tf.zeros([1, 0, 4]),
    seed=seed,
    min_object_covered=0.0,
    aspect_ratio_range=list(aspect_ratio_range),
    area_range=list(area_range),
    max_attempts=20,
    use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def crop_and_resize(frames: tf.Tensor, window: tf.Tensor, resolution: int) -> tf.Tensor:
  """uint8 [T, H, W, 3] -> float32 [T, R, R, 3] in [0, 1]: crop `window`, resize to R x R.

  Frames whose window is already R x R are not resampled (ShapesWorld at its native size).
  """
  y0, x0, h, w = tf.unstack(window)
  frames = tf.image.convert_image_dtype(frames[:, y0 : y0 + h, x0 : x0 + w], tf.float32)
  frames = tf.cond(
    tf.logical_and(tf.equal(h, resolution), tf.equal(w, resolution)),
    lambda: frames,
    lambda: tf.image.resize(frames, [resolution, resolution], antialias=True),
  )
  return tf.ensure_shape(frames, [None, resolution, resolution, 3])


def crop_boxes(
  boxes: tf.Tensor, window: tf.Tensor, height: tf.Tensor, width: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """Boxes [..., 4] (ymin, xmin, ymax, xmax) normalised to the frame -> to the crop window.

  Returns (boxes clipped to [0, 1] in window coordinates, inside [...] bool: the clipped box
  still has positive area, i.e. the object can be seen in the crop).
  """
  y0, x0, h, w = tf.unstack(tf.cast(window, tf.float32))
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  scale = tf.stack([height / h, width / w, height / h, width / w])
  shift = tf.stack([y0 / h, x0 / w, y0 / h, x0 / w])
  cropped = tf.clip_by_value(boxes * scale - shift, 0.0, 1.0)
  inside = (cropped[..., 2] > cropped[..., 0]) & (cropped[..., 3] > cropped[..., 1])
  return cropped, inside


def flip_left_right(frames: tf.Tensor) -> tf.Tensor:
  """Mirrors every frame of [T, H, W, C]."""
  return tf.reverse(frames, axis=[2])


def normalize(frames: tf.Tensor, kind: str) -> tf.Tensor:
  """float [0, 1] frames -> 'unit' (unchanged) or 'imagenet' ((x - mean) / std)."""
  if kind == "unit":
    return frames
  if kind == "imagenet":
    return (frames - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
  raise ValueError(f"Unknown normalization {kind!r}; expected one of {NORMALIZATIONS}")
