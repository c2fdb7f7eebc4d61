"""Composable preprocessing ops for the input pipeline (big_vision style).

An op is a callable `op(features: dict) -> dict` that returns a new dict (it never mutates its
input). Example ops run in order inside the per-record `tf.data` map of
`input_pipeline.make_dataset_from_ops`, on a dict that starts as the parsed record
(`schema.parse_sequence_example`: context fields under their names, `frames`, and `boxes`,
`visible`, `masks` when an op sets `needs_annotations`) plus `index`, the record's position in
the stream (int64 while the ops run, int32 in the batch). Batch ops run on whole batches after
batching. Every op works eagerly too, on a hand-made dict.

Ops hand each other private intermediates under keys starting with "_" (for instance Crop's
"_window", which the box and mask ops read so that annotations follow the pixels). After the
last example op, `apply_example_ops` drops every "_" key and every raw record field that no
op lists in its `writes` (`Keep` lists raw fields to pass through unchanged); keys an op adds
under new names are kept. So `caption` leaves the map only when Caption (or Keep) asks for it.

Randomness. Training draws are stateless: a draw with salt s uses the seed (seed + s, index),
so a clip's augmentation is a pure function of (seed, stream index) and survives resume and
any host layout. The salts are fixed (changing one changes every stream drawn with it):
temporal offset 0, crop window 1, flip 2, caption draw 3, question draw 4. Ops that draw take
`train` and `seed`; give them the `train` and `seed` of the dataset. Without `train` they are
deterministic: centred frames, centre square, no flip, the first caption and questions.

The ops and the keys they write are listed in the batch contract of
data_pipelines/input_pipeline.py; docs/data.md ("Input ops") shows how a task composes them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Mapping, Sequence, Union

import numpy as np
import tensorflow as tf

from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import video_ops

Features = dict
Op = Callable[[Features], Features]

# Salts of the per-example seeds (seed + salt, index); see the module docstring.
SALT_OFFSET = 0
SALT_CROP = 1
SALT_FLIP = 2
SALT_CAPTION = 3
SALT_QUESTION = 4


def example_seed(features: Features, seed: int, salt: int) -> tf.Tensor:
  """The stateless seed [2] int64 (seed + salt, index) of one draw for this example."""
  return tf.stack([tf.cast(seed + salt, tf.int64), tf.cast(features["index"], tf.int64)])


def sample_frame_indices(
  num_available: tf.Tensor, num_frames: int, stride: int, offset_fraction: tf.Tensor
) -> tf.Tensor:
  """Indices of `num_frames` frames `stride` apart, starting at a fraction of the free range.

  offset_fraction in [0, 1) picks the start among the valid starts (0.5: centred). Clips
  shorter than the span repeat their last frame.
  """
  span = (num_frames - 1) * stride + 1
  max_start = tf.maximum(tf.cast(num_available, tf.int32) - span, 0)
  start = tf.cast(tf.floor(offset_fraction * tf.cast(max_start + 1, tf.float32)), tf.int32)
  start = tf.minimum(start, max_start)
  indices = start + tf.range(num_frames, dtype=tf.int32) * stride
  return tf.minimum(indices, tf.cast(num_available, tf.int32) - 1)


def pad_or_trim(values: tf.Tensor, length: int, pad_value) -> tf.Tensor:
  """The first `length` entries of `values` [N], padded with `pad_value` up to `length`."""
  values = values[:length]
  padding = length - tf.shape(values)[0]
  padded = tf.concat([values, tf.fill([padding], tf.constant(pad_value, values.dtype))], axis=0)
  return tf.ensure_shape(padded, [length])


def _draw_index(features: Features, seed: int, salt: int, count: tf.Tensor) -> tf.Tensor:
  """A uniform draw in [0, count) (0 when count is 0), stateless in (seed + salt, index)."""
  pick = tf.cast(
    tf.random.stateless_uniform([], seed=example_seed(features, seed, salt))
    * tf.cast(tf.maximum(count, 1), tf.float32),
    tf.int32,
  )
  return tf.minimum(pick, tf.maximum(count - 1, 0))


def _require(features: Features, keys: Sequence[str], op: str, hint: str) -> None:
  missing = [k for k in keys if k not in features]
  if missing:
    raise KeyError(f"{op} reads {missing}, which the features lack ({hint})")


# ------------------------------------------------------------------------------------------
# Video.


@dataclasses.dataclass(frozen=True)
class Frames:
  """Samples `num_frames` stored frames `stride` apart and decodes them.

  Reads `frames` [N] JPEG strings and `index`. Writes `_frame_ids` int32 [T] (the stored frame
  of each sampled frame; `sample_frame_indices`: a random start (salt 0) when `train`, else
  centred; short clips repeat their last frame) and `_frames` uint8 [T, H, W, 3].
  """

  num_frames: int
  stride: int = 1
  train: bool = False
  seed: int = 0
  writes: ClassVar[tuple[str, ...]] = ()

  def __call__(self, features: Features) -> Features:
    num_available = tf.shape(features["frames"])[0]
    offset = (
      tf.random.stateless_uniform([], seed=example_seed(features, self.seed, SALT_OFFSET))
      if self.train
      else 0.5
    )
    frame_ids = sample_frame_indices(num_available, self.num_frames, self.stride, offset)
    frames = video_ops.decode_jpeg_frames(tf.gather(features["frames"], frame_ids))
    return {**features, "_frame_ids": frame_ids, "_frames": frames}


@dataclasses.dataclass(frozen=True)
class Crop:
  """Crops the decoded clip and resizes it to `resolution` x `resolution`.

  A random resized crop (`video_ops.random_crop_window`, salt 1) when `train` and
  area[0] < 1, else the centre square. Reads `_frames`. Writes `video` float32 [T, R, R, 3] in
  [0, 1], `_window` int32 (y0, x0, h, w) in pixels and `_frame_size` int32 (H, W) of the
  decoded frames (box and mask ops map annotations with these two).
  """

  resolution: int
  area: tuple[float, float] = (1.0, 1.0)
  aspect_ratio: tuple[float, float] = (0.75, 4 / 3)
  train: bool = False
  seed: int = 0
  writes: ClassVar[tuple[str, ...]] = ("video",)

  def __call__(self, features: Features) -> Features:
    _require(features, ["_frames"], "Crop", "run Frames first")
    frames = features["_frames"]
    height, width = tf.shape(frames)[1], tf.shape(frames)[2]
    if self.train and self.area[0] < 1.0:
      window = video_ops.random_crop_window(
        height, width, example_seed(features, self.seed, SALT_CROP), self.area, self.aspect_ratio
      )
    else:
      window = video_ops.center_crop_window(height, width)
    return {
      **features,
      "video": video_ops.crop_and_resize(frames, window, self.resolution),
      "_window": window,
      "_frame_size": tf.stack([height, width]),
    }


@dataclasses.dataclass(frozen=True)
class Flip:
  """Mirrors the clip left-right with probability 1/2 (salt 2) when `train`; else a no-op.

  Reads and writes `video`; writes `_flipped` (bool scalar) when `train`, which the box and
  mask ops that run after Flip follow.
  """

  train: bool = False
  seed: int = 0
  writes: ClassVar[tuple[str, ...]] = ("video",)

  def __call__(self, features: Features) -> Features:
    if not self.train:
      return features
    flipped = (
      tf.random.stateless_uniform([], seed=example_seed(features, self.seed, SALT_FLIP)) < 0.5
    )
    video = features["video"]
    video = tf.cond(flipped, lambda: video_ops.flip_left_right(video), lambda: video)
    return {**features, "video": video, "_flipped": flipped}


@dataclasses.dataclass(frozen=True)
class Normalize:
  """`video_ops.normalize(video, kind)`: "unit" keeps [0, 1], "imagenet" standardises.

  Reads and writes `video`.
  """

  kind: str = "unit"
  writes: ClassVar[tuple[str, ...]] = ("video",)

  def __post_init__(self):
    if self.kind not in video_ops.NORMALIZATIONS:
      raise ValueError(
        f"Unknown normalization {self.kind!r}; expected one of {video_ops.NORMALIZATIONS}"
      )

  def __call__(self, features: Features) -> Features:
    return {**features, "video": video_ops.normalize(features["video"], self.kind)}


@dataclasses.dataclass(frozen=True)
class Views:
  """Multi-view testing: `num_clips` temporal windows x `num_crops` spatial crops of a clip.

  Temporal: windows of `num_frames` frames `stride` apart whose starts are spread evenly over
  the valid starts (`sample_frame_indices` with offset fractions (i + 0.5) / num_clips), so one
  clip is the centred window that Frames takes when not training. Spatial: squares whose side
  is `crop_fraction` x the frame's short side, resized to `resolution`: the centre one, or for
  num_crops=3 also the two ends of the longer side (the usual 3-crop test), or for a square
  frame the top-left and bottom-right corners, so that the three still differ.

  Reads `frames`. Writes `video` float32 [V, T, R, R, 3] with V = num_clips * num_crops, view v
  being clip v // num_crops and crop v % num_crops (crop 0 is the centre), and `view_valid`
  int32 [V] (all ones; the batch keeps it so a model can mask views). The single view, the
  middle clip's centre crop, is view `center_view`.
  """

  num_frames: int
  num_clips: int = 1
  num_crops: int = 1
  resolution: int = 64
  crop_fraction: float = 1.0
  stride: int = 1
  writes: ClassVar[tuple[str, ...]] = ("video", "view_valid")

  def __post_init__(self):
    if self.num_clips < 1 or self.num_crops not in (1, 3):
      raise ValueError(f"Views: num_clips >= 1 and num_crops 1 or 3, got {self}")
    if not 0.0 < self.crop_fraction <= 1.0:
      raise ValueError(f"Views: crop_fraction must lie in (0, 1], got {self.crop_fraction}")

  @property
  def center_view(self) -> int:
    return (self.num_clips // 2) * self.num_crops

  def _windows(self, height: tf.Tensor, width: tf.Tensor) -> list[tf.Tensor]:
    side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * self.crop_fraction, tf.int32)
    dy, dx = height - side, width - side
    center = tf.stack([dy // 2, dx // 2, side, side])
    if self.num_crops == 1:
      return [center]
    # Along the longer side; a square frame has none, so its diagonal is used.
    first = tf.stack([tf.where(dy >= dx, 0, dy // 2), tf.where(dx >= dy, 0, dx // 2), side, side])
    last = tf.stack([tf.where(dy >= dx, dy, dy // 2), tf.where(dx >= dy, dx, dx // 2), side, side])
    return [center, first, last]

  def __call__(self, features: Features) -> Features:
    num_available = tf.shape(features["frames"])[0]
    views = []
    for clip in range(self.num_clips):
      offset = tf.constant((clip + 0.5) / self.num_clips)
      frame_ids = sample_frame_indices(num_available, self.num_frames, self.stride, offset)
      frames = video_ops.decode_jpeg_frames(tf.gather(features["frames"], frame_ids))
      height, width = tf.shape(frames)[1], tf.shape(frames)[2]
      for window in self._windows(height, width):
        views.append(video_ops.crop_and_resize(frames, window, self.resolution))
    return {
      **features,
      "video": tf.stack(views),
      "view_valid": tf.ones([len(views)], tf.int32),
    }


# ------------------------------------------------------------------------------------------
# Text.


@dataclasses.dataclass(frozen=True)
class Caption:
  """The clip's caption string.

  Reads `caption` and, when drawing, `captions`. With `sample` and `train` the caption is drawn
  uniformly from `captions` (salt 3; records without a `captions` list keep `caption`); else
  it is `caption`, the primary one. Writes `caption` string [].
  """

  sample: bool = False
  train: bool = False
  seed: int = 0
  writes: ClassVar[tuple[str, ...]] = ("caption",)

  def __call__(self, features: Features) -> Features:
    caption = features["caption"]
    if self.train and self.sample:
      captions = features["captions"]
      count = tf.shape(captions)[0]
      pick = _draw_index(features, self.seed, SALT_CAPTION, count)
      caption = tf.cond(count > 0, lambda: captions[pick], lambda: caption)
    return {**features, "caption": caption}


@dataclasses.dataclass(frozen=True)
class Nouns:
  """The caption's first `num_nouns` noun phrases.

  Reads `nouns` [N] strings. Writes `nouns` string [K] (padded with "") and `noun_valid`
  int32 [K] (1 on the caption's nouns). Tokenize(..., "nouns", prompt=...) turns them into
  prompted tokens; padded slots get tokens too, noun_valid masks them out.
  """

  num_nouns: int
  writes: ClassVar[tuple[str, ...]] = ("nouns", "noun_valid")

  def __call__(self, features: Features) -> Features:
    nouns = features["nouns"]
    num_valid = tf.minimum(tf.shape(nouns)[0], self.num_nouns)
    return {
      **features,
      "nouns": pad_or_trim(nouns, self.num_nouns, ""),
      "noun_valid": tf.cast(tf.range(self.num_nouns) < num_valid, tf.int32),
    }


@dataclasses.dataclass(frozen=True)
class CaptionId:
  """A 31-bit hash of `caption` as it is when the op runs (finds duplicate captions).

  Put it before Caption(sample=True) to hash the clip's primary caption (what identifies the
  clip; the pretraining list does). Reads `caption`; writes `caption_id` int32 [].
  """

  writes: ClassVar[tuple[str, ...]] = ("caption_id",)

  def __call__(self, features: Features) -> Features:
    caption_id = tf.strings.to_hash_bucket_fast(features["caption"], 2**31 - 1)
    return {**features, "caption_id": tf.cast(caption_id, tf.int32)}


class Questions:
  """Up to `num_questions` questions of the clip and their answers' ids in a closed vocabulary.

  `vocab`: {answer: id} or a sequence of answers (id = position; a repeated answer is an
  error); ids must be >= 0 and `vocab_size` is the largest id + 1. Reads `qa_question`,
  `qa_answer` [Q] strings (Q = the shorter of the two). Takes S' = min(Q, S) pairs,
  S = `num_questions`: the first S' in record order, or with `sample` and `train` S' pairs drawn
  uniformly without replacement (salt 4: the first S' of a stateless random permutation of the
  Q pairs, kept in the order drawn). Writes `question` string [S], `answer` int32 [S] (the id;
  -1 for an answer outside `vocab`) and `answer_valid` int32 [S] (1 on the S' real questions),
  all of static shape [S]; padding slots hold question "", answer -1, answer_valid 0. An
  out-of-vocabulary answer keeps answer_valid = 1: it counts in accuracy as a question no model
  can get right (honest accuracy over all questions), and a loss must skip answer = -1.
  """

  writes: ClassVar[tuple[str, ...]] = ("question", "answer", "answer_valid")

  def __init__(
    self,
    vocab: Union[Mapping[str, int], Sequence[str]],
    num_questions: int,
    *,
    sample: bool = False,
    train: bool = False,
    seed: int = 0,
  ):
    if isinstance(vocab, Mapping):
      keys, ids = list(vocab.keys()), [int(v) for v in vocab.values()]
    else:
      keys, ids = list(vocab), list(range(len(vocab)))
      if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"The answer vocabulary repeats {repeated[:5]}: ids would be ambiguous")
    if not keys:
      raise ValueError("The answer vocabulary is empty")
    if min(ids) < 0:
      raise ValueError("Answer ids must be >= 0 (-1 marks out-of-vocabulary answers)")
    if num_questions < 1:
      raise ValueError(f"Questions: num_questions must be >= 1, got {num_questions}")
    self.num_questions = int(num_questions)
    self.sample, self.train, self.seed = sample, train, seed
    self.vocab_size = max(ids) + 1
    # Built once, eagerly; tf.data captures the table by reference in every map.
    self._table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), tf.constant(ids, tf.int64)),
      default_value=-1,
    )

  def __call__(self, features: Features) -> Features:
    questions, answers = features["qa_question"], features["qa_answer"]
    count = tf.minimum(tf.shape(questions)[0], tf.shape(answers)[0])
    questions, answers = questions[:count], answers[:count]
    if self.train and self.sample:
      # A uniform permutation: the ranks of Q stateless uniforms (ties have probability ~0).
      noise = tf.random.stateless_uniform(
        [count], seed=example_seed(features, self.seed, SALT_QUESTION)
      )
      order = tf.argsort(noise, stable=True)
      questions, answers = tf.gather(questions, order), tf.gather(answers, order)
    size = self.num_questions
    valid = tf.range(size) < tf.minimum(count, size)
    ids = tf.cast(self._table.lookup(pad_or_trim(answers, size, "")), tf.int32)
    return {
      **features,
      "question": pad_or_trim(questions, size, ""),
      "answer": tf.where(valid, ids, -1),
      "answer_valid": tf.cast(valid, tf.int32),
    }


@dataclasses.dataclass(frozen=True)
class Label:
  """The clip's class label: its first `action_labels` entry.

  Reads `action_labels` [*] int64. Writes `label` int32 [] (-1 without a label) and
  `label_valid` int32 [] (1 when the clip has one).
  """

  writes: ClassVar[tuple[str, ...]] = ("label", "label_valid")

  def __call__(self, features: Features) -> Features:
    labels = tf.cast(features["action_labels"], tf.int32)
    has_label = tf.size(labels) > 0
    return {
      **features,
      "label": tf.concat([labels, [-1]], axis=0)[0],
      "label_valid": tf.cast(has_label, tf.int32),
    }


@dataclasses.dataclass(frozen=True)
class Segments:
  """The timed segments, in sampled-frame units: which frames of the clip each one covers.

  Reads `segment_start`, `segment_end` [S] (stored frames, end exclusive) and `_frame_ids`.
  Writes `segments` int32 [max_segments, 2]: for segment s, [a, b) such that sampled frame t
  lies in it exactly when a <= t < b (the sampled frames are in stored order, so they are a
  run); and `segment_valid` int32 [max_segments]: 1 for a record segment that covers at least
  one sampled frame. Segments keep their record order; the first `max_segments` are kept,
  padding is [0, 0] with segment_valid 0.
  """

  max_segments: int
  writes: ClassVar[tuple[str, ...]] = ("segments", "segment_valid")

  def __call__(self, features: Features) -> Features:
    _require(features, ["_frame_ids"], "Segments", "run Frames first")
    frame_ids = tf.cast(features["_frame_ids"], tf.int64)
    starts = pad_or_trim(features["segment_start"], self.max_segments, 0)
    ends = pad_or_trim(features["segment_end"], self.max_segments, 0)
    count = tf.minimum(tf.shape(features["segment_start"])[0], self.max_segments)
    before = lambda bounds: tf.reduce_sum(
      tf.cast(frame_ids[None, :] < bounds[:, None], tf.int32), axis=1
    )
    first, end = before(starts), before(ends)
    valid = (tf.range(self.max_segments) < count) & (end > first)
    segments = tf.where(valid[:, None], tf.stack([first, end], axis=1), 0)
    return {**features, "segments": segments, "segment_valid": tf.cast(valid, tf.int32)}


# ------------------------------------------------------------------------------------------
# Per-object annotations. They follow the crop (`_window`) and, after Flip, the flip.


def _mirror_boxes(boxes: tf.Tensor) -> tf.Tensor:
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def _clip_boxes(features: Features, op: str) -> tuple[tf.Tensor, tf.Tensor]:
  """Every object's box in the sampled frames, in crop coordinates: (boxes float32 [T, O, 4],
  visible int64 [T, O]); an object cropped away counts as not visible."""
  _require(
    features,
    ["boxes", "visible"],
    op,
    "parse the record with annotations: make_dataset_from_ops does when an op sets "
    "needs_annotations",
  )
  _require(features, ["_frame_ids", "_window", "_frame_size"], op, "run Frames and Crop first")
  frame_ids, (height, width) = features["_frame_ids"], tf.unstack(features["_frame_size"])
  boxes, inside = video_ops.crop_boxes(
    tf.gather(features["boxes"], frame_ids), features["_window"], height, width
  )
  visible = tf.gather(features["visible"], frame_ids) * tf.cast(inside, tf.int64)
  if "_flipped" in features:
    boxes = tf.where(features["_flipped"], _mirror_boxes(boxes), boxes)
  return boxes, visible


@dataclasses.dataclass(frozen=True)
class NounBoxes:
  """Box and visibility of the object each noun refers to, in every sampled frame.

  Reads `noun_object` [N] (object index, -1 unknown), `boxes`, `visible`, `_frame_ids`,
  `_window`, `_frame_size` and `_flipped` when present. Writes `noun_boxes` float32 [K, T, 4]
  ((ymin, xmin, ymax, xmax) in [0, 1] of the crop) and `noun_visible` int32 [K, T] (1 where
  the object is visible in the crop). Noun k is known when noun_object[k] is an object of the
  record (the schema gives nouns and noun_object equal lengths); unknown nouns, padded slots
  and real video (no objects) give zeros.
  """

  num_nouns: int
  needs_annotations: ClassVar[bool] = True
  writes: ClassVar[tuple[str, ...]] = ("noun_boxes", "noun_visible")

  def __call__(self, features: Features) -> Features:
    boxes, visible = _clip_boxes(features, "NounBoxes")  # [T, O, 4], [T, O]
    objects = pad_or_trim(tf.cast(features["noun_object"], tf.int32), self.num_nouns, -1)
    known = (objects >= 0) & (objects < tf.shape(boxes)[1])
    safe = tf.where(known, objects, 0)
    # Real video has O = 0: pad one dummy object so the gather below stays in range.
    boxes = tf.pad(boxes, [[0, 0], [0, 1], [0, 0]])
    visible = tf.pad(visible, [[0, 0], [0, 1]])
    noun_boxes = tf.transpose(tf.gather(boxes, safe, axis=1), [1, 0, 2])  # [K, T, 4]
    noun_visible = tf.transpose(tf.gather(visible, safe, axis=1), [1, 0])  # [K, T]
    return {
      **features,
      "noun_boxes": tf.where(known[:, None, None], noun_boxes, 0.0),
      "noun_visible": tf.where(known[:, None], tf.cast(noun_visible, tf.int32), 0),
    }


@dataclasses.dataclass(frozen=True)
class Boxes:
  """Every object's box in the sampled frames, padded to `max_objects` objects.

  Reads `boxes` [N, O, 4], `visible` [N, O], `_frame_ids`, `_window`, `_frame_size` and
  `_flipped` when present. Writes `object_boxes` float32 [T, max_objects, 4] (in [0, 1] of the
  crop), `object_visible` int32 [T, max_objects] (1 where visible in the crop) and
  `object_valid` int32 [max_objects] (1 for the record's objects; objects past max_objects are
  dropped, padding is zeros).
  """

  max_objects: int
  needs_annotations: ClassVar[bool] = True
  writes: ClassVar[tuple[str, ...]] = ("object_boxes", "object_visible", "object_valid")

  def __call__(self, features: Features) -> Features:
    boxes, visible = _clip_boxes(features, "Boxes")
    num_objects = tf.shape(boxes)[1]
    pad = tf.maximum(self.max_objects - num_objects, 0)
    boxes = tf.pad(boxes[:, : self.max_objects], [[0, 0], [0, pad], [0, 0]])
    visible = tf.pad(visible[:, : self.max_objects], [[0, 0], [0, pad]])
    return {
      **features,
      "object_boxes": tf.ensure_shape(boxes, [None, self.max_objects, 4]),
      "object_visible": tf.ensure_shape(tf.cast(visible, tf.int32), [None, self.max_objects]),
      "object_valid": tf.cast(tf.range(self.max_objects) < num_objects, tf.int32),
    }


@dataclasses.dataclass(frozen=True)
class Masks:
  """The object index maps of the sampled frames, cropped like the video.

  Reads `masks` [N] PNG strings (uint8 index maps: 0 background, o + 1 object o), `_frame_ids`,
  `_window`, `_frame_size` and `_flipped` when present. Each sampled frame's map is decoded,
  cropped with the clip's window, resized to `resolution` x `resolution` with nearest
  neighbour (no new ids appear) and flipped with the clip. Writes `object_masks` int32
  [T, R, R]: 0 background, o + 1 for object o < max_objects (pixels of later objects read 0,
  like Boxes drops them). A record without masks (real video) gives zeros.
  """

  resolution: int
  max_objects: int
  needs_annotations: ClassVar[bool] = True
  writes: ClassVar[tuple[str, ...]] = ("object_masks",)

  def __call__(self, features: Features) -> Features:
    _require(
      features,
      ["masks"],
      "Masks",
      "parse the record with annotations: make_dataset_from_ops does when an op sets "
      "needs_annotations",
    )
    _require(features, ["_frame_ids", "_window"], "Masks", "run Frames and Crop first")
    frame_ids, window = features["_frame_ids"], features["_window"]
    pngs = features["masks"]
    num_frames = tf.shape(frame_ids)[0]
    size = self.resolution

    def decode():
      maps = tf.map_fn(
        lambda png: tf.io.decode_png(png, channels=1),
        tf.gather(pngs, frame_ids),
        fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint8),
      )
      y0, x0, h, w = tf.unstack(window)
      maps = tf.image.resize(maps[:, y0 : y0 + h, x0 : x0 + w], [size, size], method="nearest")
      return tf.cast(maps[..., 0], tf.int32)

    maps = tf.cond(
      tf.size(pngs) > 0, decode, lambda: tf.zeros(tf.stack([num_frames, size, size]), tf.int32)
    )
    if "_flipped" in features:
      maps = tf.where(features["_flipped"], tf.reverse(maps, axis=[2]), maps)
    maps = tf.where(maps > self.max_objects, 0, maps)
    return {**features, "object_masks": tf.ensure_shape(maps, [None, size, size])}


class Keep:
  """Passes raw record fields through to the batch unchanged: Keep("video_id", "fps").

  Reads and writes `keys`. Batching needs one shape per key across records: scalars and
  fixed-length fields only (variable-length lists need an op that pads them).
  """

  def __init__(self, *keys: str):
    self.keys = self.writes = tuple(keys)

  def __call__(self, features: Features) -> Features:
    _require(features, self.keys, "Keep", "Keep names fields of the parsed record")
    return features


def needs_annotations(example_ops: Sequence[Op]) -> bool:
  """Whether any op reads the per-frame annotation lists (`boxes`, `visible`, `masks`)."""
  return any(getattr(op, "needs_annotations", False) for op in example_ops)


def apply_example_ops(example_ops: Sequence[Op], record: Features, index: tf.Tensor) -> Features:
  """Runs `example_ops` in order on {**record, "index": index}, then keeps what they ask for.

  The result drops keys starting with "_" and the raw record fields (keys of `record`) that no
  op lists in `writes`; `index` becomes int32.
  """
  features = {**record, "index": index}
  for op in example_ops:
    features = op(features)
  asked = {key for op in example_ops for key in getattr(op, "writes", ())}
  out = {
    k: v for k, v in features.items() if not k.startswith("_") and (k not in record or k in asked)
  }
  out["index"] = tf.cast(features["index"], tf.int32)
  return out


# ------------------------------------------------------------------------------------------
# Batch ops: run on whole batches, after `batch`.


class Tokenize:
  """Tokenises a string key of a batch with the sentencepiece tokenizer.

  Reads `key`, strings [B, ...] (e.g. `caption` [B] or `nouns` [B, K]); each string is
  formatted into `prompt` ("{}": the string itself; the nouns use the noun prompt). Writes
  `<name>_tokens` and `<name>_mask` int32 [B, ..., max_len] ([CLS] + pieces, padded with 0;
  mask 1 on real tokens; name defaults to key) and removes `key`: strings stop here, every
  key that leaves the pipeline is a numeric array. One tf.numpy_function call per batch.
  """

  def __init__(
    self,
    tokenizer: tokenizer_lib.Tokenizer,
    key: str,
    max_len: int,
    *,
    name: str | None = None,
    prompt: str = "{}",
  ):
    if "{}" not in prompt:
      raise ValueError(f"The prompt {prompt!r} must contain '{{}}' for the text")
    self.tokenizer, self.key, self.max_len = tokenizer, key, max_len
    self.name = name or key
    self.prefix, _, self.suffix = prompt.partition("{}")

  def _encode(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = self.tokenizer.encode(list(texts), self.max_len)
    return ids.astype(np.int32), mask.astype(np.int32)

  def __call__(self, batch: Features) -> Features:
    strings = batch[self.key]
    flat = tf.reshape(strings, [-1])
    if self.prefix or self.suffix:
      flat = tf.strings.join([self.prefix, flat, self.suffix])
    tokens, mask = tf.numpy_function(self._encode, [flat], [tf.int32, tf.int32], stateful=False)
    shape = tf.concat([tf.shape(strings), [self.max_len]], axis=0)
    static = strings.shape.concatenate([self.max_len])
    out = {k: v for k, v in batch.items() if k != self.key}
    out[f"{self.name}_tokens"] = tf.ensure_shape(tf.reshape(tokens, shape), static)
    out[f"{self.name}_mask"] = tf.ensure_shape(tf.reshape(mask, shape), static)
    return out
