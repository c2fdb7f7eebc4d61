"""The TFDS feature spec shared by the svilm TFDS builders, and the record -> example mapping.

One FeaturesDict mirrors schema.py field for field (see its docstring for meanings):

  video_id, source, caption          Text
  nouns, object_names                Sequence(Text)      [K], [O]
  noun_object, action_labels         Sequence(int64)     [K], [*]
  segment_start, segment_end,
  segment_action, segment_object     Sequence(int64)     [S]
  segment_caption                    Sequence(Text)      [S]
  qa_question, qa_answer             Sequence(Text)      [Q]
  fps                                float32
  height, width, num_objects         int64
  frames                             Video uint8 [T, H, W, 3], stored as the source JPEG bytes
  boxes                              Tensor float32 [T, O, 4] (ymin, xmin, ymax, xmax) in [0, 1]
  visible                            Tensor int64 [T, O]
  masks (with_masks only)            Video uint8 [T, H, W, 1], stored as the source PNG bytes

`frames` is a `tfds.features.Video`: it is a Sequence of Image whose frame shape may be None,
so videos of different sizes share one spec (frames of one video share a size, as decoding
stacks them). Video/Image store `bytes` inputs verbatim, so the shards' JPEG (and PNG) bytes
are copied, never decoded and re-encoded; decoding happens on read.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np
import tensorflow_datasets as tfds

_TEXT = ("video_id", "source", "caption")
_TEXT_LISTS = ("nouns", "object_names", "segment_caption", "qa_question", "qa_answer")
_INT_LISTS = (
  "noun_object",
  "action_labels",
  "segment_start",
  "segment_end",
  "segment_action",
  "segment_object",
)
_INTS = ("height", "width", "num_objects")


def features(with_masks: bool) -> tfds.features.FeaturesDict:
  """The FeaturesDict above; `masks` only when `with_masks`."""
  spec: Dict[str, Any] = {name: tfds.features.Text() for name in _TEXT}
  spec.update({name: tfds.features.Sequence(tfds.features.Text()) for name in _TEXT_LISTS})
  spec.update({name: tfds.features.Sequence(np.int64) for name in _INT_LISTS})
  spec.update({name: tfds.features.Scalar(np.int64) for name in _INTS})
  spec["fps"] = tfds.features.Scalar(np.float32)
  spec["frames"] = tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg")
  # Two unknown dimensions (T and O) need a bytes encoding; zlib shrinks the mostly-0/1
  # `visible` and the repetitive boxes of idle frames.
  spec["boxes"] = tfds.features.Tensor(
    shape=(None, None, 4), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB
  )
  spec["visible"] = tfds.features.Tensor(
    shape=(None, None), dtype=np.int64, encoding=tfds.features.Encoding.ZLIB
  )
  if with_masks:
    spec["masks"] = tfds.features.Video(shape=(None, None, None, 1), encoding_format="png")
  return tfds.features.FeaturesDict(spec)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def to_example(fields: Mapping[str, Any], with_masks: bool) -> Dict[str, Any]:
  """Maps one video to a `features(with_masks)` example.

  Args:
    fields: schema.VideoRecord keyword arguments (as `shapesworld.build.video_fields` returns)
      or the numpy values of `schema.parse_sequence_example` (text as bytes); `frames` (and
      `masks`) are lists of encoded frames, `boxes` [T, O, 4] or None, `visible` [T, O] or None.
    with_masks: whether to copy `masks` (required then).

  Returns:
    A dict of plain Python / numpy values; frames stay encoded bytes.
  """
  example: Dict[str, Any] = {name: _text(fields.get(name, "")) for name in _TEXT}
  example.update({name: [_text(v) for v in fields.get(name, ())] for name in _TEXT_LISTS})
  example.update({name: [int(v) for v in fields.get(name, ())] for name in _INT_LISTS})
  frames = [bytes(f) for f in fields["frames"]]
  boxes, visible = fields.get("boxes"), fields.get("visible")
  # Real video has no annotations: [T, 0, ...] keeps one shape rule for every example.
  boxes = np.zeros((len(frames), 0, 4)) if boxes is None else boxes
  visible = np.zeros((len(frames), 0)) if visible is None else visible
  example.update(
    height=int(fields["height"]),
    width=int(fields["width"]),
    num_objects=int(np.shape(boxes)[1]),
    fps=np.float32(fields["fps"]),
    frames=frames,
    boxes=np.asarray(boxes, np.float32),
    visible=np.asarray(visible, np.int64),
  )
  if with_masks:
    example["masks"] = [bytes(m) for m in fields["masks"]]
  return example
