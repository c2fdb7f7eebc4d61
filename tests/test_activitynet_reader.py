"""Tests for data_pipelines/readers/activitynet.py (and build_shards' segments) on a file in the
release's format and tiny PyAV-made videos."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines import validate
from data_pipelines.readers import activitynet
from tests.conftest import run_tool
from tests.test_build_shards import _records
from tests.test_build_shards import _write_video

FPS, SHORT_SIDE, NUM_SHARDS = 4.0, 16, 2
KNOBS = dict(fps=FPS, short_side=SHORT_SIDE, num_shards=NUM_SHARDS, max_skipped_fraction=0.5)
CLASSES = ["Bathing dog", "Long jump"]  # sorted: ids 0 and 1
JUMP, DOG = "Long jump", "Bathing dog"


def _annotation(start, end, label):
  return {"segment": [start, end], "label": label}


# id: (subset, file under videos/ or None, seconds, annotations). Videos are 8 fps.
VIDEOS = {
  "aAaAaAaAaA1": (
    "training",
    "v_aAaAaAaAaA1.mp4",
    4,
    [_annotation(0.3, 1.6, JUMP), _annotation(2.6, 5.0, DOG), _annotation(4.5, 6.0, JUMP)],
  ),
  "bBbBbBbBbB2": ("training", "bBbBbBbBbB2.mp4", 2, [_annotation(0.0, 0.1, DOG)]),
  "cCcCcCcCcC3": ("training", None, 2, [_annotation(0.5, 1.0, JUMP)]),  # no file
  "dDdDdDdDdD4": ("validation", "dDdDdDdDdD4.mkv", 3, [_annotation(0.5, 2.5, JUMP)]),
  "eEeEeEeEeE5": ("validation", "v_eEeEeEeEeE5.mp4", 2, [_annotation(5, 3, JUMP)]),  # bad
  "fFfFfFfFfF6": ("testing", "v_fFfFfFfFfF6.mp4", 2, []),
}


@pytest.fixture(scope="module")
def anet(tmp_path_factory):
  """activity_net.v1-3.min.json and videos/."""
  base = tmp_path_factory.mktemp("activitynet")
  database = {}
  for video_id, (subset, name, seconds, segments) in VIDEOS.items():
    database[video_id] = dict(
      subset=subset,
      duration=float(seconds),
      resolution="32x32",
      url=f"https://www.youtube.com/watch?v={video_id}",
      annotations=segments,
    )
    if name:
      os.makedirs(base / "videos", exist_ok=True)
      form = "matroska" if name.endswith(".mkv") else None
      _write_video(str(base / "videos" / name), "mpeg4", 32, 32, 8, 8 * seconds, form)
  data = {"version": "VERSION 1.3", "taxonomy": [], "database": database}
  (base / "activity_net.v1-3.min.json").write_text(json.dumps(data))
  return base


def _command(anet, out, *extra):
  return [
    sys.executable,
    "-m",
    "data_pipelines.readers.activitynet",
    f"--annotations={anet / 'activity_net.v1-3.min.json'}",
    f"--video_root={anet / 'videos'}",
    f"--output={out}",
    f"--fps={FPS}",
    f"--short_side={SHORT_SIDE}",
    f"--num_shards={NUM_SHARDS}",
    *extra,
  ]


@pytest.fixture(scope="module")
def built(anet):
  """The CLI run once (training and validation); returns (output directory, process)."""
  out = anet / "shards"
  result = run_tool(_command(anet, out, "--max_skipped_fraction=0.5"))
  assert result.returncode == 0, result.stderr
  return out, result


def _segments(record):
  fields = ("segment_start", "segment_end", "segment_action", "segment_object")
  values = [record[f].numpy().tolist() for f in fields]
  captions = [c.decode() for c in record["segment_caption"].numpy()]
  return list(zip(*values, captions))


def _skipped(out, split):
  with open(os.path.join(out, f"{split}-skipped.tsv")) as f:
    return [line.rstrip("\n").split("\t") for line in f][1:]


def test_records_hold_every_segment_in_frames(built):
  out, _ = built
  train, val = _records(out, "train"), _records(out, "val")
  assert sorted(train) == ["aAaAaAaAaA1", "bBbBbBbBbB2"] and sorted(val) == ["dDdDdDdDdD4"]
  a, b, d = train["aAaAaAaAaA1"], train["bBbBbBbBbB2"], val["dDdDdDdDdD4"]
  # At 4 fps: [0.3, 1.6) s -> [floor 1.2, ceil 6.4) = [1, 7); [2.6, 5.0) -> [10, 20) clipped
  # to the 16 frames of 4 s; [4.5, 6.0) starts past the last frame and is left out.
  assert len(a["frames"]) == 16
  assert _segments(a) == [(1, 7, 1, -1, JUMP), (10, 16, 0, -1, DOG)]
  assert a["action_labels"].numpy().tolist() == [1, 0]  # distinct, in order of first segment
  assert a["caption"].numpy() == b"long jump" and a["source"].numpy() == b"activitynet"
  # [0.0, 0.1) -> [0, max(1, ceil 0.4)) = [0, 1).
  assert len(b["frames"]) == 8 and _segments(b) == [(0, 1, 0, -1, DOG)]
  assert b["action_labels"].numpy().tolist() == [0] and b["caption"].numpy() == b"bathing dog"
  assert len(d["frames"]) == 12 and _segments(d) == [(2, 10, 1, -1, JUMP)]
  assert a["fps"].numpy() == FPS
  assert (out / "classes.txt").read_text() == "".join(f"{c}\n" for c in CLASSES)
  assert validate.validate([str(out)]).ok


def test_missing_video_and_bad_segment_are_skipped_and_reported(built):
  out, result = built
  assert _skipped(out, "train") == [["2", "cCcCcCcCcC3", "v_cCcCcCcCcC3.mp4", "missing file"]]
  assert _skipped(out, "val") == [
    [
      "1",
      "eEeEeEeEeE5",
      "v_eEeEeEeEeE5.mp4",
      "bad annotation 0 of video eEeEeEeEeE5: segment [5, 3] is not 0 <= start < end",
    ]
  ]
  assert result.stdout.splitlines() == [
    f"train: build_shards: wrote 2 clips in 2 shards; skipped 1 of 3 (33.3%) -> "
    f"{out}/train-skipped.tsv",
    f"val: build_shards: wrote 1 clips in 2 shards; skipped 1 of 2 (50.0%) -> "
    f"{out}/val-skipped.tsv",
  ]
  assert not any(name.startswith("test-") for name in os.listdir(out))  # not asked for


def _ground_truth_item(video_id):
  subset, _, seconds, segments = VIDEOS[video_id]
  return dict(subset=subset, duration=float(seconds), annotations=segments)


def test_ground_truth_holds_the_written_videos_in_the_release_format(built):
  out, _ = built
  with open(out / "ground_truth.json") as f:
    ground_truth = json.load(f)
  assert ground_truth == {
    "version": "VERSION 1.3",
    "database": {v: _ground_truth_item(v) for v in ("aAaAaAaAaA1", "bBbBbBbBbB2", "dDdDdDdDdD4")},
  }


def test_testing_subset_into_the_same_output(anet, built, tmp_path):
  out = tmp_path / "shards"
  shutil.copytree(built[0], out)
  summaries = activitynet.build_activitynet(
    str(anet / "activity_net.v1-3.min.json"),
    str(anet / "videos"),
    str(out),
    subsets=["testing"],
    **KNOBS,
  )
  assert list(summaries) == ["test"] and summaries["test"]["clips"] == 1
  f = _records(out, "test")["fFfFfFfFfF6"]
  assert len(f["frames"]) == 8 and _segments(f) == [] and f["caption"].numpy() == b""
  assert (out / "classes.txt").read_text() == "".join(f"{c}\n" for c in CLASSES)
  with open(out / "ground_truth.json") as gt:
    database = json.load(gt)["database"]
  assert database == {
    v: _ground_truth_item(v) for v in ("aAaAaAaAaA1", "bBbBbBbBbB2", "dDdDdDdDdD4", "fFfFfFfFfF6")
  }


BAD_ANNOTATIONS = {
  "strings": ({"segment": ["1.0", "2.0"], "label": JUMP}, "is not \\[start, end\\] in seconds"),
  "one_time": ({"segment": [1.0], "label": JUMP}, "is not \\[start, end\\] in seconds"),
  "negative": ({"segment": [-1.0, 2.0], "label": JUMP}, "is not 0 <= start < end"),
  "empty": ({"segment": [2.0, 2.0], "label": JUMP}, "is not 0 <= start < end"),
  "no_label": ({"segment": [1.0, 2.0]}, "no label"),
  "not_object": ([1.0, 2.0], "is not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_a_bad_annotation_skips_its_video(tmp_path, case):
  annotation, match = BAD_ANNOTATIONS[case]
  with pytest.raises(ValueError, match=match):
    activitynet.parse_segment(annotation)
  item = {"subset": "training", "annotations": [_annotation(0, 1, JUMP), annotation]}
  entry = activitynet.video_entry("xYz", item, CLASSES, str(tmp_path))
  assert entry.error.startswith("bad annotation 1 of video xYz: ")


BAD_FILES = {
  "not_json": ("{not json", "is not JSON"),
  "no_database": ({"version": "VERSION 1.3"}, 'expected an ActivityNet v1.3 object {"database"'),
  "subset": ({"database": {"xYz": {"subset": "train"}}}, "video xYz: subset 'train' is not"),
  "item": ({"database": {"xYz": [1, 2]}}, "video xYz: expected an object"),
  "annotations": (
    {"database": {"xYz": {"subset": "training", "annotations": {}}}},
    "video xYz: annotations are not a list",
  ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_raises_before_decoding(anet, tmp_path, case):
  content, match = BAD_FILES[case]
  path = tmp_path / "bad.json"
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=match):
    activitynet.build_activitynet(str(path), str(anet / "videos"), str(out), **KNOBS)
  assert not out.exists()


def test_cli_bad_file_is_one_fatal_line(anet, tmp_path):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps({"database": {"xYz": {"subset": "train"}}}))
  command = _command(anet, tmp_path / "out", f"--annotations={path}")  # the last one counts
  result = run_tool(command)
  assert result.returncode == 1 and result.stdout == ""
  assert result.stderr.strip().splitlines() == [
    f"FATAL activitynet: {path}: video xYz: subset 'train' is not one of "
    "['training', 'validation', 'testing']"
  ]


def test_unknown_subset_is_refused(anet, tmp_path):
  with pytest.raises(ValueError, match="expected some of"):
    activitynet.build_activitynet(
      str(anet / "activity_net.v1-3.min.json"), str(anet), str(tmp_path), subsets=["train"]
    )


def test_video_file_prefers_v_prefix_then_mp4(tmp_path):
  assert activitynet.video_file("xYz", str(tmp_path)) == "v_xYz.mp4"  # none exists
  for name in ("xYz.webm", "v_xYz.mkv", "xYz.mp4"):
    (tmp_path / name).write_bytes(b"x")
  assert activitynet.video_file("xYz", str(tmp_path)) == "xYz.mp4"
  (tmp_path / "v_xYz.mp4").write_bytes(b"x")
  assert activitynet.video_file("xYz", str(tmp_path)) == "v_xYz.mp4"
  os.remove(tmp_path / "v_xYz.mp4")
  os.remove(tmp_path / "xYz.mp4")
  assert activitynet.video_file("xYz", str(tmp_path)) == "v_xYz.mkv"


def test_segment_frames_rounding_and_clipping():
  segments = [
    (0.3, 0.7, 0, "a"),  # 0.7 * 10 = 7.000000000000001: still frame end 7
    (0.0, 0.01, 1, "b"),  # shorter than a frame: one frame
    (0.95, 3.0, 0, "a"),  # past the 12 frames: clipped
    (1.2, 2.0, 1, "b"),  # starts past the last frame: left out
  ]
  assert build_shards.segment_frames(segments, 0.0, 10.0, 12) == [
    (3, 7, 0, "a"),
    (0, 1, 1, "b"),
    (9, 12, 0, "a"),
  ]
  # A clip starting at 0.5 s: times count from there; a segment before it is left out.
  assert build_shards.segment_frames([(0.1, 0.4, 0, "a"), (0.3, 0.8, 1, "b")], 0.5, 10.0, 12) == [
    (0, 3, 1, "b")
  ]


def test_build_entries_refuses_malformed_segments(tmp_path):
  entry = annotations.Entry("a.mp4", "x", None, None, "a", segments=((2.0, 1.0, 0, "a"),))
  with pytest.raises(ValueError, match="segments"):
    build_shards.build_entries(
      [entry], str(tmp_path), str(tmp_path / "out"), source="x", annotations_sha256="0"
    )
