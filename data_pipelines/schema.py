"""The on-disk record format: one place for every shard field.

Every video (ShapesWorld or real) is one `tf.train.SequenceExample`:

context (per video)
  schema_version   int64    SCHEMA_VERSION at write time
  video_id         bytes    unique id within the dataset
  source           bytes    dataset name ("shapesworld", "webvid", ...)
  caption          bytes    the clip-level caption (UTF-8): the primary one
  captions         bytes[C] every caption of the video in the annotation's order, captions[0] ==
                            caption; empty (and then not written at all) when the video has
                            only `caption`, so read `captions or [caption]` for all of them
  nouns            bytes[K] noun phrases of `caption`, in order of mention
  noun_object      int64[K] object index each noun refers to (-1: unknown)
  fps              float    frames per second of the stored frames
  height, width    int64    frame size in pixels
  num_objects      int64    objects with per-frame annotations (0 for real video)
  object_names     bytes[O] "red circle" for each annotated object
  action_labels    int64[*] clip-level action class ids (may be empty)
  segment_start    int64[S] first frame of each timed phrase/segment
  segment_end      int64[S] one past the last frame of each segment
  segment_caption  bytes[S] caption of each segment
  segment_action   int64[S] action class of each segment (-1: none)
  segment_object   int64[S] object acting in each segment (-1: none)
  qa_question      bytes[Q] question strings
  qa_answer        bytes[Q] answer strings (a closed vocabulary per dataset)

feature lists (one entry per stored frame, T entries)
  frames           bytes          JPEG-encoded RGB frame
  boxes            float[4*O]     per object (ymin, xmin, ymax, xmax), normalised to [0, 1]
  visible          int64[O]       1 if any pixel of the object is visible in the frame
  masks            bytes          PNG-encoded uint8 index map: 0 background, o+1 object o

Real video carries only frames and the text fields; annotation lists are then empty and
`num_objects` is 0. Bump SCHEMA_VERSION whenever a field changes meaning.

Versions (a reader accepts only SCHEMA_VERSION, so a bump makes every older shard unreadable):

  1   the fields above. `captions` was added later without a bump: it changes the meaning of
      no field (`caption` is still the caption a single-caption reader trains on), a record
      without it parses as `captions` = [] (what every single-caption record says anyway),
      and a record without extra captions is written byte for byte as before, so existing
      shards, builder manifests and caches all stay valid.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1

# Context fields by dtype; the parser and the writer both read these tables.
_CONTEXT_SCALARS_INT = ("schema_version", "height", "width", "num_objects")
_CONTEXT_SCALARS_FLOAT = ("fps",)
_CONTEXT_SCALARS_BYTES = ("video_id", "source", "caption")
_CONTEXT_LISTS_INT = (
  "noun_object",
  "action_labels",
  "segment_start",
  "segment_end",
  "segment_action",
  "segment_object",
)
_CONTEXT_LISTS_BYTES = ("nouns", "object_names", "segment_caption", "qa_question", "qa_answer")
# Lists written only when non-empty: fields added to version 1 after shards of it existed, left
# out when empty so that records without them keep their exact bytes (see the docstring).
_OPTIONAL_CONTEXT_LISTS_BYTES = ("captions",)


@dataclasses.dataclass
class VideoRecord:
  """One video with its text and (optional) dense annotations, as held in memory."""

  video_id: str
  frames: Sequence[bytes]  # JPEG bytes per frame
  caption: str
  height: int
  width: int
  fps: float = 25.0
  source: str = ""
  captions: Sequence[str] = ()  # all captions, captions[0] == caption; () = only caption
  nouns: Sequence[str] = ()
  noun_object: Sequence[int] = ()
  object_names: Sequence[str] = ()
  action_labels: Sequence[int] = ()
  segment_start: Sequence[int] = ()
  segment_end: Sequence[int] = ()
  segment_caption: Sequence[str] = ()
  segment_action: Sequence[int] = ()
  segment_object: Sequence[int] = ()
  qa_question: Sequence[str] = ()
  qa_answer: Sequence[str] = ()
  boxes: Optional[np.ndarray] = None  # [T, O, 4] float, normalised
  visible: Optional[np.ndarray] = None  # [T, O] int/bool
  masks: Optional[Sequence[bytes]] = None  # PNG bytes per frame

  @property
  def num_objects(self) -> int:
    return 0 if self.boxes is None else int(self.boxes.shape[1])


def _bytes(values):
  return tf.train.Feature(
    bytes_list=tf.train.BytesList(
      value=[v.encode("utf-8") if isinstance(v, str) else v for v in values]
    )
  )


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def to_sequence_example(record: VideoRecord) -> tf.train.SequenceExample:
  """Serialises a VideoRecord; checks the shapes it relies on."""
  num_frames = len(record.frames)
  if num_frames == 0:
    raise ValueError(f"{record.video_id}: a record needs at least one frame")
  if len(record.nouns) != len(record.noun_object):
    raise ValueError(f"{record.video_id}: nouns and noun_object differ in length")
  segment_lengths = {
    len(getattr(record, f))
    for f in _CONTEXT_LISTS_INT + _CONTEXT_LISTS_BYTES
    if f.startswith("segment_")
  }
  if len(segment_lengths) > 1:
    raise ValueError(f"{record.video_id}: segment_* fields differ in length")
  if len(record.qa_question) != len(record.qa_answer):
    raise ValueError(f"{record.video_id}: qa_question and qa_answer differ in length")
  if len(record.captions) and record.captions[0] != record.caption:
    raise ValueError(
      f"{record.video_id}: caption {record.caption!r} is not captions[0] {record.captions[0]!r}"
    )

  values = dataclasses.asdict(record)
  values.update(schema_version=SCHEMA_VERSION, num_objects=record.num_objects)
  context = {}
  for name in _CONTEXT_SCALARS_INT:
    context[name] = _ints([values[name]])
  for name in _CONTEXT_SCALARS_FLOAT:
    context[name] = _floats([values[name]])
  for name in _CONTEXT_SCALARS_BYTES:
    context[name] = _bytes([values[name]])
  for name in _CONTEXT_LISTS_INT:
    context[name] = _ints(values[name])
  for name in _CONTEXT_LISTS_BYTES:
    context[name] = _bytes(values[name])
  for name in _OPTIONAL_CONTEXT_LISTS_BYTES:
    if len(values[name]):
      context[name] = _bytes(values[name])

  feature_lists = {"frames": tf.train.FeatureList(feature=[_bytes([f]) for f in record.frames])}
  if record.boxes is not None:
    boxes = np.asarray(record.boxes, np.float32)
    visible = np.asarray(record.visible, np.int64)
    if boxes.shape[0] != num_frames or visible.shape != boxes.shape[:2]:
      raise ValueError(
        f"{record.video_id}: boxes {boxes.shape} / visible {visible.shape} do "
        f"not match {num_frames} frames"
      )
    feature_lists["boxes"] = tf.train.FeatureList(feature=[_floats(b.reshape(-1)) for b in boxes])
    feature_lists["visible"] = tf.train.FeatureList(feature=[_ints(v) for v in visible])
  if record.masks is not None:
    if len(record.masks) != num_frames:
      raise ValueError(f"{record.video_id}: {len(record.masks)} masks for {num_frames} frames")
    feature_lists["masks"] = tf.train.FeatureList(feature=[_bytes([m]) for m in record.masks])
  return tf.train.SequenceExample(
    context=tf.train.Features(feature=context),
    feature_lists=tf.train.FeatureLists(feature_list=feature_lists),
  )


def parse_sequence_example(serialized: tf.Tensor, with_annotations: bool = True):
  """Parses one serialised record into a dict of tensors (works inside tf.data.map).

  Returns context fields under their names (scalars as 0-d tensors, lists as 1-d; `captions` is
  a [C] string tensor, [0] when the record has none), `frames` as a [T] string tensor of JPEG
  bytes, and with `with_annotations` also `boxes` [T, O, 4] float32,
  `visible` [T, O] int64 and `masks` [T] PNG bytes (empty tensors when absent).
  """
  context_spec = {}
  for name in _CONTEXT_SCALARS_INT:
    context_spec[name] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
  for name in _CONTEXT_SCALARS_FLOAT:
    context_spec[name] = tf.io.FixedLenFeature([], tf.float32, default_value=0.0)
  for name in _CONTEXT_SCALARS_BYTES:
    context_spec[name] = tf.io.FixedLenFeature([], tf.string, default_value="")
  for name in _CONTEXT_LISTS_INT:
    context_spec[name] = tf.io.VarLenFeature(tf.int64)
  for name in _CONTEXT_LISTS_BYTES + _OPTIONAL_CONTEXT_LISTS_BYTES:
    # A missing VarLenFeature parses as an empty list: older records read as captions = [].
    context_spec[name] = tf.io.VarLenFeature(tf.string)
  sequence_spec = {"frames": tf.io.FixedLenSequenceFeature([], tf.string)}
  if with_annotations:
    sequence_spec.update(
      boxes=tf.io.VarLenFeature(tf.float32),
      visible=tf.io.VarLenFeature(tf.int64),
      masks=tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
    )
  context, sequence = tf.io.parse_single_sequence_example(
    serialized, context_features=context_spec, sequence_features=sequence_spec
  )
  out = {}
  for name, value in context.items():
    out[name] = tf.sparse.to_dense(value) if isinstance(value, tf.sparse.SparseTensor) else value
  out["frames"] = sequence["frames"]
  if with_annotations:
    num_frames = tf.shape(sequence["frames"])[0]
    num_objects = tf.cast(out["num_objects"], tf.int32)
    boxes = tf.sparse.to_dense(sequence["boxes"])
    visible = tf.sparse.to_dense(sequence["visible"])
    # Real video has no per-frame annotation lists: give [T, 0, ...] tensors instead.
    out["boxes"] = tf.reshape(boxes, [num_frames, num_objects, 4])
    out["visible"] = tf.reshape(visible, [num_frames, num_objects])
    out["masks"] = sequence["masks"]
  return out
