"""Checks TFRecord shards against data_pipelines.schema before anything trains on them.

Usage: python -m data_pipelines.validate PATH [PATH ...] [--max_problems=100]
       [--decode_frames=true]

PATH is a shard directory (every *.tfrecord in it), a glob, or a file. Every record of every
file is read and checked against the schema (see `check_record` for the exact rules); a
corrupt file (bad CRC, truncated) is reported at the record where reading failed and the next
file is read. Prints per-file counts, totals, each problem as FILE:RECORD_INDEX: message (at
most --max_problems of them), and last `validate: N records in M files, K problems`. Exits 0
when K == 0, 1 otherwise.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import io
import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import tensorflow as tf

from data_pipelines import schema

_TEXT_LISTS = ("nouns", "object_names", "segment_caption", "qa_question", "qa_answer")
_SEGMENT_FIELDS = (
  "segment_start",
  "segment_end",
  "segment_caption",
  "segment_action",
  "segment_object",
)


@dataclasses.dataclass(frozen=True)
class Problem:
  """One failed check; record_index is None for a problem of the whole file (e.g. missing)."""

  file: str
  record_index: Optional[int]
  message: str

  def __str__(self) -> str:
    where = self.file if self.record_index is None else f"{self.file}:{self.record_index}"
    return f"{where}: {self.message}"


@dataclasses.dataclass
class FileCount:
  """Records and frames read from one file (up to the point where reading failed)."""

  file: str
  records: int = 0
  frames: int = 0


@dataclasses.dataclass
class Report:
  """What `validate` found: per-file counts in the order read, and every problem."""

  files: List[FileCount] = dataclasses.field(default_factory=list)
  problems: List[Problem] = dataclasses.field(default_factory=list)

  @property
  def num_records(self) -> int:
    return sum(f.records for f in self.files)

  @property
  def num_frames(self) -> int:
    return sum(f.frames for f in self.files)

  @property
  def ok(self) -> bool:
    return not self.problems


class RecordCheck(NamedTuple):
  """The result of `check_record`: video_id and frame count are None/0 when unparseable."""

  video_id: Optional[str]
  num_frames: int
  messages: List[str]


def expand_paths(paths: Sequence[str]) -> Tuple[List[str], List[Problem]]:
  """Directories -> their sorted *.tfrecord, globs -> sorted matches, files as given.

  A path that names nothing is a Problem (record_index None); files named twice count once.
  """
  files, problems = [], []
  for path in paths:
    if os.path.isdir(path):
      matches = sorted(glob.glob(os.path.join(path, "*.tfrecord")))
    elif glob.has_magic(path):
      matches = sorted(p for p in glob.glob(path) if os.path.isfile(p))
    else:
      matches = [path] if os.path.isfile(path) else []
    if not matches:
      problems.append(Problem(path, None, "matches no TFRecord file"))
    files += [m for m in matches if m not in files]
  return files, problems


def _op_error(error: tf.errors.OpError) -> str:
  """The useful part of a TF op error ("truncated record at 464"), without the op names."""
  message = str(error).strip().splitlines()[0]
  message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message)
  message = re.sub(r"\s*\[Op:\w+\].*$", "", message)
  # Reader errors quote an inner status ("... at 464' failed with Read less ..."); parser
  # errors end with a hint about parser options that is noise here.
  return message.replace("' failed with ", ": ").split("  Did you mean")[0]


def _text(value: bytes, name: str, messages: List[str]) -> str:
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError as e:
    messages.append(f"{name} is not valid UTF-8 ({e.reason} at byte {e.start})")
    return ""


class _PerFrame:
  """Collects per-frame failures so that one record reports each kind once, with a count."""

  def __init__(self, num_frames: int):
    self.num_frames = num_frames
    self.first: Dict[str, Tuple[int, str]] = {}
    self.count: Dict[str, int] = collections.Counter()

  def add(self, kind: str, frame: int, detail: str) -> None:
    self.first.setdefault(kind, (frame, detail))
    self.count[kind] += 1

  def messages(self) -> List[str]:
    return [
      f"frame {frame}: {detail} ({self.count[kind]} of {self.num_frames} frames)"
      for kind, (frame, detail) in self.first.items()
    ]


def _decode_image(data: bytes, fmt: str) -> Image.Image:
  """Fully decodes `data` (PIL is lazy: load() is what reads a truncated body)."""
  try:
    image = Image.open(io.BytesIO(data))
  except Image.UnidentifiedImageError:
    raise ValueError("unrecognised image data") from None  # PIL's message names a BytesIO
  if image.format != fmt:
    raise ValueError(f"is {image.format}, not {fmt}")
  image.load()
  return image


def _check_annotations(
  proto,
  num_frames: int,
  num_objects: int,
  height: int,
  width: int,
  decode_frames: bool,
  per_frame: _PerFrame,
  messages: List[str],
) -> None:
  """boxes / visible / masks feature lists against num_objects and the frame size."""
  lists = proto.feature_lists.feature_list
  for name, kind, size in (
    ("boxes", "float_list", 4 * num_objects),
    ("visible", "int64_list", num_objects),
  ):
    entries = lists[name].feature if name in lists else []
    if num_objects == 0:
      # Real video: parse_sequence_example reshapes these to [T, 0, ...], so any value breaks it.
      if sum(len(getattr(f, kind).value) for f in entries):
        messages.append(f"num_objects is 0 but {name} has values")
      continue
    if len(entries) != num_frames:
      messages.append(f"{name} has {len(entries)} entries for {num_frames} frames")
      continue
    for t, feature in enumerate(entries):
      if feature.WhichOneof("kind") != kind:
        per_frame.add(f"{name}-kind", t, f"{name} is {feature.WhichOneof('kind')}, not {kind}")
        continue
      values = np.asarray(getattr(feature, kind).value)
      if values.size != size:
        per_frame.add(
          f"{name}-size",
          t,
          f"{name} has {values.size} values, expected {size} for {num_objects} objects",
        )
      elif name == "boxes":
        boxes = values.reshape(num_objects, 4)  # (ymin, xmin, ymax, xmax) per object
        if not (np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()):
          per_frame.add("boxes-range", t, "box value outside [0, 1]")
        elif ((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3])).any():
          per_frame.add("boxes-order", t, "box with ymin > ymax or xmin > xmax")
      elif not np.isin(values, (0, 1)).all():
        per_frame.add("visible-range", t, "visible value not in {0, 1}")

  masks = lists["masks"].feature if "masks" in lists else []
  if masks and len(masks) != num_frames:
    messages.append(f"masks has {len(masks)} entries for {num_frames} frames")
    return
  for t, feature in enumerate(masks):
    if feature.WhichOneof("kind") != "bytes_list" or len(feature.bytes_list.value) != 1:
      per_frame.add("masks-kind", t, "mask is not one bytes value")
      continue
    if not decode_frames:
      continue
    try:
      image = _decode_image(feature.bytes_list.value[0], "PNG")
    except (OSError, ValueError, SyntaxError) as e:
      per_frame.add("masks-decode", t, f"mask is not a decodable PNG ({e})")
      continue
    if image.mode != "L" or image.size != (width, height):
      per_frame.add(
        "masks-shape",
        t,
        f"mask is {image.mode} {image.size[1]}x{image.size[0]}, expected L {height}x{width}",
      )
    elif np.asarray(image).max() > num_objects:
      per_frame.add(
        "masks-range", t, f"mask value {np.asarray(image).max()} > num_objects {num_objects}"
      )


def check_record(serialized: bytes, *, decode_frames: bool = True) -> RecordCheck:
  """Checks one serialised record against data_pipelines.schema.

  The record must be a SequenceExample that schema.parse_sequence_example accepts (fields of
  the schema's types and counts, a `frames` list), with schema_version == SCHEMA_VERSION,
  non-empty video_id, height, width, fps > 0, num_objects >= 0, at least one frame, a
  non-empty caption, non-empty `captions` entries of which the first is `caption` (when there
  are any), all text valid UTF-8, len(nouns) == len(noun_object) with noun_object and
  segment_object in [-1, num_objects), len(object_names) == num_objects, segment_* of one
  length with 0 <= start < end <= num_frames, equal qa list lengths, and the annotations of
  `_check_annotations`. With `decode_frames`, every frame must decode as a JPEG of exactly
  height x width and every mask as an 8-bit PNG of that size with values <= num_objects;
  without it, frames need only start with the JPEG marker and masks are not decoded.
  Per-frame failures are reported once per kind per record, with a count.
  """
  # The proto first, for a clear message on non-records, and because the annotation lists are
  # checked on it: the schema parser would only fail on them with a reshape error.
  try:
    proto = tf.train.SequenceExample.FromString(serialized)
  except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError varies by backend)
    return RecordCheck(None, 0, [f"not a SequenceExample ({type(e).__name__})"])
  try:
    parsed = schema.parse_sequence_example(serialized, with_annotations=False)
  except tf.errors.InvalidArgumentError as e:
    return RecordCheck(None, 0, [f"does not parse with the schema: {_op_error(e)}"])
  record = {k: v.numpy() for k, v in parsed.items()}
  messages: List[str] = []
  version, num_objects = int(record["schema_version"]), int(record["num_objects"])
  height, width = int(record["height"]), int(record["width"])
  frames = record["frames"]
  if version != schema.SCHEMA_VERSION:
    messages.append(f"schema_version {version} != SCHEMA_VERSION {schema.SCHEMA_VERSION}")
  video_id = _text(record["video_id"], "video_id", messages)
  if not record["video_id"]:
    messages.append("video_id is empty")
  if height <= 0 or width <= 0:
    messages.append(f"frame size {height}x{width} is not positive")
  if not record["fps"] > 0:
    messages.append(f"fps {record['fps']} is not positive")
  if num_objects < 0:
    messages.append(f"num_objects {num_objects} is negative")
  if not frames.size:
    messages.append("no frames")
  # Whitespace-only counts as empty: it tokenises to nothing, like an empty caption. A record
  # for a classification or QA task (a label or QA pairs) may have no caption (build_shards'
  # rule: a record needs a caption, action labels or QA pairs).
  has_task_labels = len(record["action_labels"]) or len(record["qa_question"])
  if not record["caption"].strip() and not has_task_labels:
    messages.append("caption is empty")
  _text(record["caption"], "caption", messages)
  for name in _TEXT_LISTS:
    for i, value in enumerate(record[name]):
      _text(value, f"{name}[{i}]", messages)
  # Every caption is training (or query) text, held to the same rules as `caption`; an empty
  # list is a record with only `caption` (see the schema).
  captions = record["captions"]
  for i, value in enumerate(captions):
    _text(value, f"captions[{i}]", messages)
    if not value.strip():
      messages.append(f"captions[{i}] is empty")
  if len(captions) and captions[0] != record["caption"]:
    shown = [v.decode("utf-8", "backslashreplace") for v in (captions[0], record["caption"])]
    messages.append(f"captions[0] {shown[0]!r} is not caption {shown[1]!r}")

  if len(record["nouns"]) != len(record["noun_object"]):
    messages.append(
      f"nouns has {len(record['nouns'])} entries, noun_object {len(record['noun_object'])}"
    )
  for name in ("noun_object", "segment_object"):
    bad = [int(v) for v in record[name] if not -1 <= v < max(num_objects, 0)]
    if bad:
      messages.append(f"{name} {bad} outside [-1, {num_objects})")
  if len(record["object_names"]) != num_objects:
    messages.append(
      f"object_names has {len(record['object_names'])} entries for {num_objects} objects"
    )
  lengths = {name: len(record[name]) for name in _SEGMENT_FIELDS}
  if len(set(lengths.values())) > 1:
    messages.append(f"segment_* lengths differ: {lengths}")
  for i, (start, end) in enumerate(zip(record["segment_start"], record["segment_end"])):
    if not 0 <= start < end <= len(frames):
      messages.append(
        f"segment {i} [{start}, {end}) not within 0 <= start < end <= {len(frames)} frames"
      )
  if len(record["qa_question"]) != len(record["qa_answer"]):
    messages.append(
      f"qa_question has {len(record['qa_question'])} entries, qa_answer {len(record['qa_answer'])}"
    )

  # A bad encoder usually breaks every frame of a video: one line per kind, not one per frame.
  per_frame = _PerFrame(len(frames))
  for t, data in enumerate(frames):
    if not decode_frames:
      if not data.startswith(b"\xff\xd8"):
        per_frame.add("frame-decode", t, "frame does not start with the JPEG marker")
      continue
    try:
      image = _decode_image(data, "JPEG")
    except (OSError, ValueError, SyntaxError) as e:
      per_frame.add("frame-decode", t, f"frame is not a decodable JPEG ({e})")
      continue
    if image.size != (width, height):
      per_frame.add(
        "frame-size", t, f"frame is {image.size[1]}x{image.size[0]}, record says {height}x{width}"
      )
  if num_objects >= 0:  # a negative count is already reported and has no shapes to check
    _check_annotations(
      proto, len(frames), num_objects, height, width, decode_frames, per_frame, messages
    )
  return RecordCheck(video_id or None, len(frames), messages + per_frame.messages())


def validate(paths: Sequence[str], *, decode_frames: bool = True) -> Report:
  """Reads every record of every file named by `paths` (see expand_paths) and checks it.

  A file that stops being readable (bad CRC, truncated) gets one Problem at the index of the
  record that failed to read; its earlier records still count. A video_id seen before in the
  checked set is a Problem at its second occurrence.
  """
  files, problems = expand_paths(paths)
  report = Report(problems=problems)
  first_seen: Dict[str, Tuple[str, int]] = {}
  for path in files:
    count = FileCount(path)
    report.files.append(count)
    # A manual loop, not a for: the read error must be caught at next() to know its index.
    iterator = iter(tf.data.TFRecordDataset(path))
    while True:
      try:
        serialized = next(iterator).numpy()
      except StopIteration:
        break
      except tf.errors.OpError as e:
        report.problems.append(Problem(path, count.records, f"unreadable: {_op_error(e)}"))
        break
      index = count.records
      check = check_record(serialized, decode_frames=decode_frames)
      count.records += 1
      count.frames += check.num_frames
      report.problems += [Problem(path, index, m) for m in check.messages]
      if check.video_id is not None:
        if check.video_id in first_seen:
          first_file, first_index = first_seen[check.video_id]
          report.problems.append(
            Problem(
              path,
              index,
              f"duplicate video_id {check.video_id!r} (first at {first_file}:{first_index})",
            )
          )
        else:
          first_seen[check.video_id] = (path, index)
  return report


def format_report(report: Report, max_problems: int = 100) -> str:
  """The CLI output: per-file counts, totals, up to max_problems problems, the summary line."""
  lines = [f"{f.file}: {f.records} records, {f.frames} frames" for f in report.files]
  lines.append(
    f"total: {report.num_records} records, {report.num_frames} frames, "
    f"{len(report.problems)} problems"
  )
  lines += [str(p) for p in report.problems[: max(max_problems, 0)]]
  if len(report.problems) > max_problems:
    lines.append(
      f"... {len(report.problems) - max_problems} more problems not shown (--max_problems)"
    )
  lines.append(
    f"validate: {report.num_records} records in {len(report.files)} files, "
    f"{len(report.problems)} problems"
  )
  return "\n".join(lines)


def _define_flags() -> None:
  # Defined only when run as a program, so importing validate from another tool adds no flags.
  flags.DEFINE_integer(
    "max_problems", 100, "Print at most this many problems (the total count is always printed)."
  )
  flags.DEFINE_bool(
    "decode_frames",
    True,
    "Decode every JPEG frame and PNG mask and check "
    "its size (the slow part); false checks only the JPEG marker.",
  )


def main(argv: Sequence[str]) -> int:
  if len(argv) < 2:
    raise app.UsageError("give at least one PATH (shard directory, glob or file)")
  report = validate(argv[1:], decode_frames=flags.FLAGS.decode_frames)
  print(format_report(report, flags.FLAGS.max_problems))
  return 0 if report.ok else 1


if __name__ == "__main__":
  _define_flags()
  app.run(main)
