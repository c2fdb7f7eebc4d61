"""Tests for the shard validator (data_pipelines/validate.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from data_pipelines import schema
from data_pipelines import validate
from data_pipelines.shapesworld import build

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 8, 8  # frame size of the hand-made records


def _image(array: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt)
  return buffer.getvalue()


def _jpeg(height: int = H, width: int = W) -> bytes:
  return _image(np.full((height, width, 3), 128, np.uint8), "JPEG")


def _good(video_id: str = "v0", num_objects: int = 1) -> tf.train.SequenceExample:
  """A valid 2-frame record with one annotated object (or none, like real video)."""
  annotations = {}
  if num_objects:
    mask = np.zeros((H, W), np.uint8)
    mask[2:4, 2:6] = 1
    annotations = dict(
      object_names=["red square"],
      nouns=["a red square"],
      noun_object=[0],
      boxes=np.array([[[0.25, 0.25, 0.5, 0.75]]] * 2, np.float32),
      visible=np.ones((2, 1), np.int64),
      masks=[_image(mask, "PNG")] * 2,
      segment_object=[0],
    )
  else:
    annotations = dict(segment_object=[-1])
  return schema.to_sequence_example(
    schema.VideoRecord(
      video_id=video_id,
      frames=[_jpeg(), _jpeg()],
      caption="a red square moves",
      height=H,
      width=W,
      source="test",
      segment_start=[0],
      segment_end=[2],
      segment_caption=["a red square moves"],
      segment_action=[3],
      qa_question=["what?"],
      qa_answer=["red"],
      **annotations,
    )
  )


def _write(path: str, records) -> str:
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record if isinstance(record, bytes) else record.SerializeToString())
  return path


def _with(mutate, video_id: str) -> tf.train.SequenceExample:
  proto = _good(video_id)
  mutate(proto.context.feature, proto.feature_lists.feature_list)
  return proto


def _set_bytes(feature, value: bytes):
  feature.ClearField("bytes_list")
  feature.bytes_list.value.append(value)


def _without_caption_or_qa(context):
  # A record with QA pairs or action labels may have no caption (a QA or classification task's
  # record); one with neither may not.
  _set_bytes(context["caption"], b"")
  for name in ("qa_question", "qa_answer"):
    context[name].ClearField("bytes_list")


# (mutation of a good record's context / feature lists, substring of its one problem message)
_BAD = [
  (
    lambda c, f: c["schema_version"].int64_list.value.__setitem__(0, 2),
    "schema_version 2 != SCHEMA_VERSION 1",
  ),
  (
    lambda c, f: _set_bytes(f["frames"].feature[1], b"\xff\xd8 not really a jpeg"),
    "frame 1: frame is not a decodable JPEG",
  ),
  (
    lambda c, f: _set_bytes(f["frames"].feature[0], _jpeg(16, 8)),
    "frame 0: frame is 16x8, record says 8x8 (1 of 2 frames)",
  ),
  (lambda c, f: _without_caption_or_qa(c), "caption is empty"),
  (
    lambda c, f: _set_bytes(c["caption"], b"caf\xe9!"),
    "caption is not valid UTF-8 (invalid continuation byte at byte 3)",
  ),
  (
    lambda c, f: c["nouns"].bytes_list.value.append(b"a circle"),
    "nouns has 2 entries, noun_object 1",
  ),
  (
    lambda c, f: f["boxes"].feature[1].float_list.value.__setitem__(2, 1.5),
    "frame 1: box value outside [0, 1] (1 of 2 frames)",
  ),
  (
    lambda c, f: [b.float_list.value.pop() for b in f["boxes"].feature],
    "frame 0: boxes has 3 values, expected 4 for 1 objects (2 of 2 frames)",
  ),
  (
    lambda c, f: c["segment_end"].int64_list.value.__setitem__(0, 5),
    "segment 0 [0, 5) not within 0 <= start < end <= 2 frames",
  ),
  (
    lambda c, f: c["caption"].ClearField("bytes_list") or c["caption"].int64_list.value.append(1),
    "does not parse with the schema",
  ),
  (
    lambda c, f: _set_bytes(f["masks"].feature[0], _image(np.full((H, W), 2, np.uint8), "PNG")),
    "frame 0: mask value 2 > num_objects 1",
  ),
  (
    lambda c, f: c["captions"].bytes_list.value.extend([b"a blue square", b"a red square"]),
    "captions[0] 'a blue square' is not caption 'a red square moves'",
  ),
  (
    lambda c, f: c["captions"].bytes_list.value.extend([b"a red square moves", b" "]),
    "captions[1] is empty",
  ),
  (
    lambda c, f: c["captions"].bytes_list.value.extend([b"a red square moves", b"caf\xe9"]),
    "captions[1] is not valid UTF-8",
  ),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
  """One file of good and bad records, one truncated file; returns (paths, expected problems)."""
  directory = tmp_path_factory.mktemp("bad")
  records = [_good("v0"), _good("real", num_objects=0)]
  records += [_with(mutate, f"bad{i}") for i, (mutate, _) in enumerate(_BAD)]
  records += [_good("v0"), b"not a proto \xff\xff"]
  mixed = _write(str(directory / "mixed.tfrecord"), records)
  expected = {(mixed, i + 2): message for i, (_, message) in enumerate(_BAD)}
  expected[(mixed, len(_BAD) + 2)] = f"duplicate video_id 'v0' (first at {mixed}:0)"
  expected[(mixed, len(_BAD) + 3)] = "not a SequenceExample"
  whole = _write(str(directory / "truncated.tfrecord"), [_good(f"t{i}") for i in range(3)])
  with open(whole, "rb") as f:
    data = f.read()
  with open(whole, "wb") as f:  # cut into the payload of the third record
    f.write(data[:-40])
  expected[(whole, 2)] = "unreadable: truncated record"
  return [mixed, whole], expected


@pytest.fixture(scope="module")
def shapesworld_dir(tmp_path_factory):
  config = build.default_config()
  config.update(
    dict(
      num_train=8,
      num_val=4,
      num_compositional=4,
      num_shards_train=2,
      num_shards_val=1,
      num_shards_compositional=1,
      num_frames=8,
      num_workers=1,
      vocab_size=128,
    )
  )
  directory = str(tmp_path_factory.mktemp("shapesworld"))
  build.build(directory, config)
  return directory


def test_shapesworld_build_is_clean(shapesworld_dir):
  report = validate.validate([shapesworld_dir])
  assert report.problems == []
  assert len(report.files) == 4  # train x2, val, compositional
  assert (report.num_records, report.num_frames) == (16, 16 * 8)
  assert [f.records for f in report.files] == [4, 4, 4, 4]


def test_each_bad_record_reported_once_at_its_index(bad_files):
  paths, expected = bad_files
  report = validate.validate(paths)
  found = {(p.file, p.record_index): p.message for p in report.problems}
  assert len(report.problems) == len(found) == len(expected), report.problems
  for key, message in expected.items():
    assert message in found.get(key, ""), (key, found.get(key))
  # The good records (0 and 1) and the truncated file's first two records pass; the truncated
  # file counts the records it could read.
  assert [(f.records, f.frames) for f in report.files] == [
    (len(_BAD) + 4, 2 * (len(_BAD) + 2)),
    (2, 4),
  ]


def test_decode_frames_false_skips_decoding(bad_files):
  paths, _ = bad_files
  report = validate.validate(paths[:1], decode_frames=False)
  messages = [p.message for p in report.problems]
  assert not any("16x8" in m or "mask value" in m for m in messages)
  # The marker check still catches frames that are not JPEG at all.
  proto = _with(lambda c, f: _set_bytes(f["frames"].feature[0], b"PNG?"), "x")
  check = validate.check_record(proto.SerializeToString(), decode_frames=False)
  assert check.messages == ["frame 0: frame does not start with the JPEG marker (1 of 2 frames)"]


def test_paths_globs_and_missing(bad_files, tmp_path):
  paths, _ = bad_files
  directory = os.path.dirname(paths[0])
  files, problems = validate.expand_paths(
    [directory, os.path.join(directory, "mix*"), str(tmp_path / "none.tfrecord")]
  )
  assert files == sorted(paths)  # the glob's match is listed once
  assert problems == [
    validate.Problem(str(tmp_path / "none.tfrecord"), None, "matches no TFRecord file")
  ]


def test_format_report_caps_problems():
  report = validate.Report(
    files=[validate.FileCount("a.tfrecord", 3, 30)],
    problems=[validate.Problem("a.tfrecord", i, f"p{i}") for i in range(3)],
  )
  assert validate.format_report(report, max_problems=2).splitlines() == [
    "a.tfrecord: 3 records, 30 frames",
    "total: 3 records, 30 frames, 3 problems",
    "a.tfrecord:0: p0",
    "a.tfrecord:1: p1",
    "... 1 more problems not shown (--max_problems)",
    "validate: 3 records in 1 files, 3 problems",
  ]


@pytest.mark.parametrize("which, code", [("clean", 0), ("bad", 1)])
def test_cli_exit_code(which, code, shapesworld_dir, bad_files):
  paths = [shapesworld_dir] if which == "clean" else bad_files[0]
  result = subprocess.run(
    [sys.executable, "-m", "data_pipelines.validate", *paths, "--max_problems=1"],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == code, result.stderr
  last = result.stdout.strip().splitlines()[-1]
  assert last == (
    "validate: 16 records in 4 files, 0 problems"
    if which == "clean"
    else f"validate: {len(_BAD) + 6} records in 2 files, {len(_BAD) + 3} problems"
  )
