"""Tests for data_pipelines/readers/ucf101.py and hmdb51.py on files in the releases' formats
and tiny PyAV-made videos."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import validate
from data_pipelines.readers import common
from data_pipelines.readers import hmdb51
from data_pipelines.readers import ucf101
from tests.conftest import run_tool
from tests.test_build_shards import _records
from tests.test_build_shards import _write_video

FPS, SHORT_SIDE, NUM_SHARDS = 4.0, 16, 2
KNOBS = dict(fps=FPS, short_side=SHORT_SIDE, num_shards=NUM_SHARDS, max_skipped_fraction=0.5)

# UCF101: classInd order is not alphabetical here, and HandstandPushups keeps the release's
# quirk of a folder name that differs from its file names (v_HandStandPushups_...).
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
UCF_TRAIN = [
  ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 1),
  ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 2),
  ("YoYo/v_YoYo_g08_c01.avi", 3),
  ("YoYo/v_YoYo_g09_c01.avi", 3),  # no file: skipped
]
UCF_TEST = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "YoYo/v_YoYo_g01_c01.avi"]

# HMDB51: file-name order (climb_stairs_test... < climb_test...) is not class-name order.
HMDB_SPLIT1 = {
  "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1), ("brush_b.avi", 2)],
  "climb": [("climb_a.avi", 2), ("climb_b.avi", 1), ("climb_c.avi", 0)],  # climb_b: no file
  "climb_stairs": [("stairs_a.avi", 1), ("stairs_b.avi", 2)],
}


def _crlf(lines):
  return "".join(f"{line}\r\n" for line in lines)  # as the released UCF101 lists


def _video(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  _write_video(path, "mpeg4", 32, 24, 10, 5)  # 0.5 s: 2 frames at 4 fps


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
  """ucfTrainTestlist/ (classInd, trainlist01, testlist01) and UCF-101/ videos."""
  base = tmp_path_factory.mktemp("ucf101")
  lists = base / "ucfTrainTestlist"
  lists.mkdir()
  (lists / "classInd.txt").write_text(_crlf(f"{k + 1} {c}" for k, c in enumerate(UCF_CLASSES)))
  (lists / "trainlist01.txt").write_text(_crlf(f"{v} {k}" for v, k in UCF_TRAIN))
  (lists / "testlist01.txt").write_text(_crlf(UCF_TEST))
  for video in [v for v, _ in UCF_TRAIN[:3]] + UCF_TEST:
    _video(str(base / "UCF-101" / video))
  return base


def _ucf_command(ucf, out, *extra):
  return [
    sys.executable,
    "-m",
    "data_pipelines.readers.ucf101",
    f"--annotations={ucf / 'ucfTrainTestlist'}",
    "--split_number=1",
    f"--video_root={ucf / 'UCF-101'}",
    f"--output={out}",
    f"--fps={FPS}",
    f"--short_side={SHORT_SIDE}",
    f"--num_shards={NUM_SHARDS}",
    *extra,
  ]


@pytest.fixture(scope="module")
def ucf_built(ucf):
  """The CLI run once; returns (output directory, completed process)."""
  out = ucf / "shards"
  result = run_tool(
    _ucf_command(ucf, out, "--max_skipped_fraction=0.5", "--tokenizer_vocab_size=40")
  )
  assert result.returncode == 0, result.stderr
  return out, result


def _labels(records):
  return {
    video_id: (r["action_labels"].numpy().tolist(), r["caption"].numpy().decode())
    for video_id, r in records.items()
  }


def _skipped(out, split):
  with open(os.path.join(out, f"{split}-skipped.tsv")) as f:
    return [line.rstrip("\n").split("\t") for line in f][1:]


def test_ucf101_records_hold_labels_and_class_captions(ucf_built):
  out, result = ucf_built
  train, test = _records(out, "train"), _records(out, "test")
  assert _labels(train) == {
    "v_ApplyEyeMakeup_g08_c01": ([0], "apply eye makeup"),
    "v_HandStandPushups_g08_c01": ([1], "handstand pushups"),
    "v_YoYo_g08_c01": ([2], "yo yo"),
  }
  assert _labels(test) == {
    "v_ApplyEyeMakeup_g01_c01": ([0], "apply eye makeup"),
    "v_YoYo_g01_c01": ([2], "yo yo"),
  }
  r = train["v_YoYo_g08_c01"]
  assert r["source"].numpy() == b"ucf101" and len(r["frames"]) == 2
  assert r["qa_question"].shape == (0,) and r["captions"].shape == (0,)
  assert (out / "classes.txt").read_text() == "".join(f"{c}\n" for c in UCF_CLASSES)
  # The class captions trained the tokenizer: no unknown piece.
  ids, _ = tokenizer_lib.Tokenizer(str(out / "tokenizer.model")).encode(["handstand pushups"], 8)
  assert tokenizer_lib.UNK_ID not in ids
  assert validate.validate([str(out)]).ok


def test_ucf101_missing_video_is_skipped_and_the_cli_reports_it(ucf, ucf_built):
  out, result = ucf_built
  assert _skipped(out, "train") == [
    ["3", "v_YoYo_g09_c01", "YoYo/v_YoYo_g09_c01.avi", "missing file"]
  ]
  assert result.stdout.splitlines() == [
    f"train: build_shards: wrote 3 clips in 2 shards; skipped 1 of 4 (25.0%) -> "
    f"{out}/train-skipped.tsv",
    f"test: build_shards: wrote 2 clips in 2 shards; skipped 0 of 2 (0.0%) -> "
    f"{out}/test-skipped.tsv",
  ]
  # A stricter rerun finds the shards done (nothing decoded) and fails on the skip limit.
  rerun = run_tool(
    _ucf_command(ucf, out, "--max_skipped_fraction=0.1", "--tokenizer_vocab_size=40")
  )
  assert rerun.returncode == 1 and rerun.stdout == result.stdout
  assert rerun.stderr.strip().splitlines()[-1:] == [  # after build_shards' log lines
    "FATAL ucf101: 25.0% of the train videos were skipped, more than "
    "--max_skipped_fraction=0.1; the shards of the rest are written. See why in "
    f"{out}/train-skipped.tsv, or raise --max_skipped_fraction"
  ]


UCF_ERRORS = {
  "class_line": ("classInd.txt", ["1 ApplyEyeMakeup", "HandstandPushups"], "expected 'ID NAME'"),
  "class_ids": ("classInd.txt", ["1 ApplyEyeMakeup", "3 YoYo"], "1..2, but 2 are missing"),
  "class_twice": ("classInd.txt", ["1 YoYo", "2 YoYo"], "named more than once: YoYo"),
  "no_label": ("trainlist01.txt", ["YoYo/v_YoYo_g08_c01.avi"], "expected 'CLASS/VIDEO.avi ID'"),
  "label_range": ("trainlist01.txt", ["YoYo/v_YoYo_g08_c01.avi 4"], "label 4 is not in 1..3"),
  "label_folder": (
    "trainlist01.txt",
    ["YoYo/v_YoYo_g08_c01.avi 1"],
    "label 1 \\(ApplyEyeMakeup\\) is not its folder's class 3 \\(YoYo\\)",
  ),
  "folder": ("testlist01.txt", ["Typing/v_Typing_g01_c01.avi"], "folder 'Typing' is not a class"),
  "twice": (
    "trainlist01.txt",
    ["YoYo/v_YoYo_g08_c01.avi 3", "YoYo/v_YoYo_g08_c01.avi 3"],
    "more than once: v_YoYo_g08_c01 \\(train and train\\)",
  ),
  "both_lists": (
    "testlist01.txt",
    ["YoYo/v_YoYo_g08_c01.avi"],
    "more than once: v_YoYo_g08_c01 \\(train and test\\)",
  ),
}


@pytest.mark.parametrize("case", sorted(UCF_ERRORS))
def test_ucf101_bad_annotations_raise_before_decoding(ucf, tmp_path, case):
  name, lines, match = UCF_ERRORS[case]
  lists = tmp_path / "lists"
  shutil.copytree(ucf / "ucfTrainTestlist", lists)
  (lists / name).write_text(_crlf(lines))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=match):
    ucf101.build_ucf101(str(lists), 1, str(ucf / "UCF-101"), str(out), **KNOBS)
  assert not out.exists()  # raised before anything was written


def test_ucf101_cli_error_is_one_fatal_line(ucf, tmp_path):
  result = run_tool(_ucf_command(ucf, tmp_path / "out", "--split_number=4"))  # the last one counts
  missing = ucf / "ucfTrainTestlist" / "trainlist04.txt"
  assert result.returncode == 1 and result.stdout == ""
  assert result.stderr.strip().splitlines() == [
    f"FATAL ucf101: [Errno 2] No such file or directory: '{missing}'"
  ]


def test_classes_txt_of_other_classes_is_refused(ucf, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "classes.txt").write_text("Archery\n")
  with pytest.raises(ValueError, match="lists other classes"):
    ucf101.build_ucf101(str(ucf / "ucfTrainTestlist"), 1, str(ucf / "UCF-101"), str(out), **KNOBS)
  assert os.listdir(out) == ["classes.txt"]


def test_class_caption():
  cases = {
    "ApplyEyeMakeup": "apply eye makeup",
    "YoYo": "yo yo",
    "CleanAndJerk": "clean and jerk",
    "Skijet": "skijet",
    "brush_hair": "brush hair",
    "sword_exercise": "sword exercise",
  }
  assert {name: common.class_caption(name) for name in cases} == cases


def _write_hmdb(base, number, split):
  base.mkdir(parents=True, exist_ok=True)
  for name, lines in split.items():
    # The released lines end in a blank before the newline.
    text = "".join(f"{video} {flag} \n" for video, flag in lines)
    (base / f"{name}_test_split{number}.txt").write_text(text)


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory):
  """testTrainMulti_7030_splits/ (splits 1 and 2) and hmdb51/<class>/ videos."""
  base = tmp_path_factory.mktemp("hmdb51")
  splits = base / "testTrainMulti_7030_splits"
  _write_hmdb(splits, 1, HMDB_SPLIT1)
  # Split 2 flags every video the other way round: reading it must not leak into split 1.
  swapped = {n: [(v, {0: 0, 1: 2, 2: 1}[f]) for v, f in lines] for n, lines in HMDB_SPLIT1.items()}
  _write_hmdb(splits, 2, swapped)
  for name, lines in HMDB_SPLIT1.items():
    for video, _ in lines:
      if video != "climb_b.avi":
        _video(str(base / "hmdb51" / name / video))
  return base


def _build_hmdb(hmdb, out, number=1, splits_dir=None):
  return hmdb51.build_hmdb51(
    str(splits_dir or hmdb / "testTrainMulti_7030_splits"),
    number,
    str(hmdb / "hmdb51"),
    str(out),
    **KNOBS,
  )


def test_hmdb51_records_classes_sorted_by_name(hmdb, tmp_path):
  out = tmp_path / "out"
  summaries = _build_hmdb(hmdb, out)
  assert {s: (v["clips"], v["skipped"]) for s, v in summaries.items()} == {
    "train": (2, 1),
    "test": (3, 0),
  }
  assert (out / "classes.txt").read_text() == "brush_hair\nclimb\nclimb_stairs\n"
  assert _labels(_records(out, "train")) == {
    "April_09_brush_hair_u_nm_np1_ba_goo_0": ([0], "brush hair"),
    "stairs_a": ([2], "climb stairs"),
  }
  assert _labels(_records(out, "test")) == {
    "brush_b": ([0], "brush hair"),
    "climb_a": ([1], "climb"),
    "stairs_b": ([2], "climb stairs"),
  }  # climb_c (flag 0) is in neither split
  assert _skipped(out, "train") == [["1", "climb_b", "climb/climb_b.avi", "missing file"]]
  manifest = json.loads((out / "train-manifest.json").read_text())
  assert manifest["settings"]["source"] == "hmdb51"
  # Another split number is other annotations: refused, not mixed into these shards.
  with pytest.raises(ValueError, match="annotations_sha256"):
    _build_hmdb(hmdb, out, number=2)


HMDB_ERRORS = {
  "flag": ({"climb": [("climb_a.avi", 3)]}, "flag 0 \\(unused\\), 1 \\(train\\) or 2"),
  "fields": ({"climb": [("climb_a.avi", "")]}, "expected '<video>.avi <flag>'"),
  "twice": (
    {"climb": [("climb_a.avi", 1)], "climb_stairs": [("climb_a.avi", 2)]},
    "climb_a.avi was already listed at climb_test_split1.txt:1",
  ),
  "no_files": ({}, "holds no <class>_test_split1.txt files"),
}


@pytest.mark.parametrize("case", sorted(HMDB_ERRORS))
def test_hmdb51_bad_annotations_raise_before_decoding(hmdb, tmp_path, case):
  split, match = HMDB_ERRORS[case]
  _write_hmdb(tmp_path / "splits", 1, split)
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=match):
    _build_hmdb(hmdb, out, splits_dir=tmp_path / "splits")
  assert not out.exists()


def test_hmdb51_cli(hmdb, tmp_path):
  out = tmp_path / "out"
  command = [
    sys.executable,
    "-m",
    "data_pipelines.readers.hmdb51",
    f"--annotations={hmdb / 'testTrainMulti_7030_splits'}",
    "--split_number=2",
    f"--video_root={hmdb / 'hmdb51'}",
    f"--output={out}",
    f"--fps={FPS}",
    f"--short_side={SHORT_SIDE}",
    "--num_shards=1",
    "--max_skipped_fraction=0.5",
  ]
  result = run_tool(command)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[0] == (
    f"train: build_shards: wrote 3 clips in 1 shards; skipped 0 of 3 (0.0%) -> "
    f"{out}/train-skipped.tsv"
  )
  assert sorted(_records(out, "test")) == ["April_09_brush_hair_u_nm_np1_ba_goo_0", "stairs_a"]
