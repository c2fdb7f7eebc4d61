"""Tests for data_pipelines/readers/video_qa.py (MSRVTT-QA, MSVD-QA files and tiny PyAV-made
videos) and for build_shards' rules for entries with QA pairs or labels and no caption."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import validate
from data_pipelines.readers import video_qa
from tests.conftest import run_tool
from tests.test_build_shards import _records
from tests.test_build_shards import _write_video

FPS, SHORT_SIDE, NUM_SHARDS = 4.0, 16, 2
KNOBS = dict(fps=FPS, short_side=SHORT_SIDE, num_shards=NUM_SHARDS, max_skipped_fraction=1.0)


def _q(video_id, question, answer, qid, **extra):
  return dict(question=question, answer=answer, video_id=video_id, id=qid, **extra)


# MSRVTT-QA objects carry category_id too; video 0's questions are interleaved with video 1's.
MSRVTT_QA = {
  "train": [
    _q(0, "what is a man doing?", "cook", 0, category_id=0),
    _q(1, "who is cooking?", "man", 1, category_id=0),
    _q(0, "what is in the kitchen?", "pot", 2, category_id=0),
    _q(2, "where is the zebra?", "zoo", 3, category_id=1),  # video2.mp4 does not exist
  ],
  "val": [_q(3, "how many dogs jump?", "two", 4, category_id=2)],
  "test": [
    _q(4, " what color is the car? ", "red ", 5, category_id=3),  # blanks are stripped
    _q(5, "what is a woman doing?", " ", 6, category_id=3),  # empty answer: skipped
  ],
}
MSVD_MAPPING = "-4wsuPCjDBc_5_15 vid1\nabc_1_2 vid2\nxyz_3_4 vid3\n"
MSVD_QA = {
  "train": [_q(1, "what is a cat doing?", "play", 0), _q(2, "who rides?", "girl", 1)],
  "val": [_q(3, "what is sliced?", "onion", 2)],
}


def _video(path):
  _write_video(str(path), "mpeg4", 32, 24, 10, 5)  # 0.5 s: 2 frames at 4 fps


def _write_qa(directory, splits):
  directory.mkdir(parents=True, exist_ok=True)
  for split, questions in splits.items():
    (directory / f"{split}_qa.json").write_text(json.dumps(questions))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """msrvtt_qa/ and msvd_qa/ annotation directories and their videos."""
  base = tmp_path_factory.mktemp("video_qa")
  _write_qa(base / "msrvtt_qa", MSRVTT_QA)
  (base / "msrvtt_videos").mkdir()
  for v in (0, 1, 3, 4, 5):
    _video(base / "msrvtt_videos" / f"video{v}.mp4")
  _write_qa(base / "msvd_qa", MSVD_QA)
  (base / "msvd_qa" / "youtube_mapping.txt").write_text(MSVD_MAPPING)
  (base / "YouTubeClips").mkdir()
  # vid2 is stored under its vid name (as some copies are), the others under their clip names.
  for name in ("-4wsuPCjDBc_5_15.avi", "vid2.avi", "xyz_3_4.avi"):
    _video(base / "YouTubeClips" / name)
  return base


def _command(files, out, *extra):
  return [
    sys.executable,
    "-m",
    "data_pipelines.readers.video_qa",
    "--dataset=msrvtt_qa",
    f"--annotations={files / 'msrvtt_qa'}",
    f"--video_root={files / 'msrvtt_videos'}",
    f"--output={out}",
    f"--fps={FPS}",
    f"--short_side={SHORT_SIDE}",
    f"--num_shards={NUM_SHARDS}",
    *extra,
  ]


@pytest.fixture(scope="module")
def msrvtt_built(files):
  """The CLI run once over the MSRVTT-QA files; returns (output directory, completed process)."""
  out = files / "msrvtt_shards"
  result = run_tool(_command(files, out, "--max_skipped_fraction=0.5", "--tokenizer_vocab_size=40"))
  assert result.returncode == 0, result.stderr
  return out, result


def _texts(tensor):
  return [t.decode("utf-8") for t in tensor.numpy()]


def _qa(records):
  return {
    video_id: list(zip(_texts(r["qa_question"]), _texts(r["qa_answer"])))
    for video_id, r in records.items()
  }


def _skipped(out, split):
  with open(os.path.join(out, f"{split}-skipped.tsv")) as f:
    return [line.rstrip("\n").split("\t") for line in f][1:]


def test_msrvtt_qa_records_hold_each_videos_pairs_in_order(msrvtt_built):
  out, _ = msrvtt_built
  train = _records(out, "train")
  assert _qa(train) == {
    "video0": [("what is a man doing?", "cook"), ("what is in the kitchen?", "pot")],
    "video1": [("who is cooking?", "man")],
  }
  assert _qa(_records(out, "val")) == {"video3": [("how many dogs jump?", "two")]}
  assert _qa(_records(out, "test")) == {"video4": [("what color is the car?", "red")]}
  r = train["video0"]
  assert r["caption"].numpy() == b"" and r["nouns"].shape == (0,)
  assert r["action_labels"].shape == (0,) and r["source"].numpy() == b"msrvtt_qa"
  assert len(r["frames"]) == 2
  # Questions and answers of kept videos trained the tokenizer ("kitchen" is only in the second
  # question of video0).
  ids, _ = tokenizer_lib.Tokenizer(str(out / "tokenizer.model")).encode(["in the kitchen pot"], 12)
  assert tokenizer_lib.UNK_ID not in ids
  # validate.py accepts an empty caption on a record with QA pairs.
  assert validate.validate([str(out)]).problems == []


def test_msrvtt_qa_skips_and_cli_report(msrvtt_built):
  out, result = msrvtt_built
  assert _skipped(out, "train") == [["2", "video2", "video2.mp4", "missing file"]]
  assert _skipped(out, "val") == []
  assert _skipped(out, "test") == [["1", "video5", "video5.mp4", "empty answer (pair 0 of 1)"]]
  assert result.stdout.splitlines() == [
    f"train: build_shards: wrote 2 clips in 2 shards; skipped 1 of 3 (33.3%) -> "
    f"{out}/train-skipped.tsv",
    f"val: build_shards: wrote 1 clips in 2 shards; skipped 0 of 1 (0.0%) -> {out}/val-skipped.tsv",
    f"test: build_shards: wrote 1 clips in 2 shards; skipped 1 of 2 (50.0%) -> "
    f"{out}/test-skipped.tsv",
  ]
  manifest = json.loads((out / "val-manifest.json").read_text())
  assert manifest["tokenizer"] is None and manifest["settings"]["source"] == "msrvtt_qa"


def test_msvd_qa_maps_video_ids_to_clips(files, tmp_path):
  out = tmp_path / "out"
  summaries = video_qa.build_video_qa(
    "msvd_qa",
    str(files / "msvd_qa"),
    str(files / "YouTubeClips"),
    str(out),
    splits=("train", "val"),
    **KNOBS,
  )
  assert {s: (v["clips"], v["skipped"]) for s, v in summaries.items()} == {
    "train": (2, 0),
    "val": (1, 0),
  }
  assert _qa(_records(out, "train")) == {
    "-4wsuPCjDBc_5_15": [("what is a cat doing?", "play")],
    "abc_1_2": [("who rides?", "girl")],  # read from vid2.avi
  }
  assert _qa(_records(out, "val")) == {"xyz_3_4": [("what is sliced?", "onion")]}
  assert not any(n.startswith("test") for n in os.listdir(out))


QA_ERRORS = {
  "not_json": ("msrvtt_qa", "train_qa.json", "[{", "is not JSON"),
  "not_list": ("msrvtt_qa", "train_qa.json", {"questions": []}, "is not a JSON list"),
  "video_id": (
    "msrvtt_qa",
    "train_qa.json",
    [dict(question="q?", answer="a", video_id="video0")],
    "question 0 has no integer video_id \\(got 'video0'\\)",
  ),
  "answer": (
    "msrvtt_qa",
    "val_qa.json",
    [dict(question="q?", answer=3, video_id=3)],
    "question 0 has no string 'answer' \\(got 3\\)",
  ),
  "id_twice": (
    "msrvtt_qa",
    "train_qa.json",
    [_q(0, "q?", "a", 7), _q(1, "r?", "b", 7)],
    "question 1 repeats id 7 of question 0",
  ),
  "two_splits": (
    "msrvtt_qa",
    "val_qa.json",
    [_q(0, "q?", "a", 9)],
    "more than once: video0 \\(train and val\\)",
  ),
  "mapping_line": ("msvd_qa", "youtube_mapping.txt", "clip1 1\n", "expected '<clip> vid<id>'"),
  "mapping_twice": ("msvd_qa", "youtube_mapping.txt", "a vid1\nb vid1\n", "mapped twice"),
  "unmapped": (
    "msvd_qa",
    "val_qa.json",
    [_q(9, "q?", "a", 5)],
    "these video_ids have no line in .*youtube_mapping.txt: 9$",
  ),
}


@pytest.mark.parametrize("case", sorted(QA_ERRORS))
def test_bad_qa_files_raise_before_decoding(files, tmp_path, case):
  dataset, name, content, match = QA_ERRORS[case]
  directory = tmp_path / dataset
  shutil.copytree(files / dataset, directory)
  (directory / name).write_text(content if isinstance(content, str) else json.dumps(content))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=match):
    splits = video_qa.SPLITS if dataset == "msrvtt_qa" else ("train", "val")
    video_qa.build_video_qa(dataset, str(directory), str(tmp_path), str(out), splits=splits)
  assert not out.exists()  # raised before anything was written


def test_cli_error_is_one_fatal_line(files, tmp_path):
  result = run_tool(_command(files, tmp_path / "out", "--splits=train,dev"))
  assert result.returncode == 1 and result.stdout == ""
  assert result.stderr.strip().splitlines() == [
    "FATAL msrvtt_qa: splits ['train', 'dev']: expected some of ('train', 'val', 'test')"
  ]


def _entry(record_id, **fields):
  """An entry of video a.mp4 with an empty caption."""
  return annotations.Entry("a.mp4", "", None, None, record_id, **fields)


def test_empty_caption_needs_labels_or_qa(tmp_path):
  _video(tmp_path / "a.mp4")
  entries = [
    _entry("a", qa=(("what is it?", "a dog"),)),
    _entry("a_labelled", action_labels=(3,)),
    _entry("a_bare"),
  ]
  summary = build_shards.build_entries(
    entries, str(tmp_path), str(tmp_path / "out"), source="s", annotations_sha256="x", **KNOBS
  )
  records = _records(tmp_path / "out")
  assert sorted(records) == ["a", "a_labelled"]
  assert records["a_labelled"]["action_labels"].numpy().tolist() == [3]
  assert summary["skipped"] == 1
  assert _skipped(tmp_path / "out", "train") == [["2", "a_bare", "a.mp4", "empty caption"]]


def test_bad_labels_or_pairs_are_errors(tmp_path):
  build = lambda e: build_shards.build_entries(
    [e], str(tmp_path), str(tmp_path / "out"), source="s", annotations_sha256="x"
  )
  with pytest.raises(ValueError, match="are not ints >= 0"):
    build(_entry("a", action_labels=(-1,)))
  with pytest.raises(ValueError, match="is not \\(question, answer\\) string pairs"):
    build(_entry("a", qa=(("just a question",),)))
  assert not (tmp_path / "out").exists()
