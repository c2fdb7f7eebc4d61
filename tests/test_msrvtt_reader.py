"""Tests for data_pipelines/readers/msrvtt.py and the multi-caption `captions` schema field."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from data_pipelines import build_shards
from data_pipelines import nouns as nouns_lib
from data_pipelines import schema
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.readers import msrvtt
from tests.conftest import REPO_ROOT
from tests.test_build_shards import _write_video

FPS, SHORT_SIDE, NUM_SHARDS = 4.0, 16, 2
SUBJECTS = ["a man", "a brown dog", "a woman", "a red car", "a chef", "a girl"]
# "j" and "x" occur only in the third sentences: a tokenizer that knows them was trained on
# every caption of a video, not only on the first.
ACTIONS = ["walks on the beach", "plays with a ball", "jumps over a fox"]
TRAIN_IDS = ["video0", "video1", "video2", "video3"]  # video3 has no file
TEST_ROWS = [
  ("ret0", "msr4", "video4", "a chef, smiling, cuts onions in a kitchen"),
  ("ret1", "msr5", "video5", "a girl wearing red top is putting a sweater on a dog"),
]


def _sentences(v):
  return [f"{SUBJECTS[v]} {action}" for action in ACTIONS]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """MSRVTT_data.json (6 videos x 3 sentences), a 4-id train list, a 2-row 1k-A CSV, videos."""
  base = tmp_path_factory.mktemp("msrvtt")
  videos = base / "videos"
  videos.mkdir()
  for v in (0, 1, 2, 4, 5):
    _write_video(str(videos / f"video{v}.mp4"), "mpeg4", 32, 24, 10, 10)  # 1 s each
  # Sentences ordered by sen_id, the videos interleaved, as in the real file.
  sentences = [
    dict(caption=_sentences(v)[k], video_id=f"video{v}", sen_id=6 * k + v)
    for k in range(3)
    for v in range(6)
  ]
  data = dict(
    info=dict(year=2016),
    videos=[
      {
        "category": v,
        "url": f"https://www.youtube.com/watch?v={v}",
        "video_id": f"video{v}",
        "start time": 1.0,
        "end time": 2.0,
        "split": "train" if v < 4 else "test",
        "id": v,
      }
      for v in range(6)
    ],
    sentences=sentences,
  )
  (base / "MSRVTT_data.json").write_text(json.dumps(data))
  (base / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(TRAIN_IDS) + "\n")
  rows = [
    f'{key},{vid_key},{video_id},"{sentence}"'
    if "," in sentence
    else f"{key},{vid_key},{video_id},{sentence}"
    for key, vid_key, video_id, sentence in TEST_ROWS
  ]
  (base / "MSRVTT_JSFUSION_test.csv").write_text(
    "key,vid_key,video_id,sentence\n" + "\n".join(rows) + "\n"
  )
  return base


def _paths(files, out):
  return dict(
    data_json=str(files / "MSRVTT_data.json"),
    train_list=str(files / "MSRVTT_train.9k.csv"),
    test_csv=str(files / "MSRVTT_JSFUSION_test.csv"),
    video_root=str(files / "videos"),
    output_dir=str(out),
  )


@pytest.fixture(scope="module")
def built(files):
  """The CLI run once over the files; returns (output directory, completed process)."""
  out = files / "shards"
  p = _paths(files, out)
  command = [
    sys.executable,
    "-m",
    "data_pipelines.readers.msrvtt",
    f"--data_json={p['data_json']}",
    f"--train_list={p['train_list']}",
    f"--test_csv={p['test_csv']}",
    f"--video_root={p['video_root']}",
    f"--output={out}",
    f"--fps={FPS}",
    f"--short_side={SHORT_SIDE}",
    f"--num_shards={NUM_SHARDS}",
    "--max_skipped_fraction=0.5",
    "--tokenizer_vocab_size=60",
  ]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  return out, result


def _records(out, split):
  records = {}
  for name in build_shards.shard_names(split, NUM_SHARDS):
    for serialized in tf.data.TFRecordDataset(os.path.join(out, name)):
      r = schema.parse_sequence_example(serialized)
      records[r["video_id"].numpy().decode()] = r
  return records


def _texts(tensor):
  return [t.decode("utf-8") for t in tensor.numpy()]


def _skipped(out, split):
  with open(os.path.join(out, f"{split}-skipped.tsv"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  assert rows[0] == ["index", "video_id", "video", "reason"]
  return rows[1:]


def test_train_records_hold_every_caption_in_order(built):
  out, _ = built
  records = _records(out, "train")
  assert sorted(records) == ["video0", "video1", "video2"]
  for video_id, r in records.items():
    expected = _sentences(int(video_id[len("video") :]))
    assert r["captions"].dtype == tf.string and r["captions"].shape == (3,)
    assert _texts(r["captions"]) == expected
    assert r["caption"].numpy().decode() == expected[0]
    assert _texts(r["nouns"]) == nouns_lib.extract_nouns(expected[0])
    assert r["source"].numpy() == b"msrvtt" and len(r["frames"]) == 4  # 1 s at 4 fps
    assert min(tf.io.decode_jpeg(r["frames"][0]).shape[:2]) == SHORT_SIDE
  # Every caption, not only the first, trained the tokenizer: no unknown piece.
  ids, _ = tokenizer_lib.Tokenizer(str(out / "tokenizer.model")).encode(["jumps over a fox"], 8)
  assert tokenizer_lib.UNK_ID not in ids


def test_test_records_carry_the_csv_sentence(built):
  out, _ = built
  records = _records(out, "test")
  assert sorted(records) == ["video4", "video5"]
  for _, _, video_id, sentence in TEST_ROWS:
    assert records[video_id]["caption"].numpy().decode() == sentence
    assert _texts(records[video_id]["captions"]) == [sentence]
  assert _skipped(out, "test") == []
  manifest = json.loads((out / "test-manifest.json").read_text())
  assert manifest["tokenizer"] is None and manifest["counts"]["clips"] == 2


def test_missing_video_is_skipped_and_listed(built):
  out, result = built
  assert _skipped(out, "train") == [["3", "video3", "video3.mp4", "missing file"]]
  assert result.stdout.splitlines() == [
    f"train: build_shards: wrote 3 clips in 2 shards; skipped 1 of 4 (25.0%) -> "
    f"{out}/train-skipped.tsv",
    f"test: build_shards: wrote 2 clips in 2 shards; skipped 0 of 2 (0.0%) -> "
    f"{out}/test-skipped.tsv",
  ]


def test_validate_is_clean(built):
  out, _ = built
  result = subprocess.run(
    [sys.executable, "-m", "data_pipelines.validate", str(out)],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().splitlines()[-1] == "validate: 5 records in 4 files, 0 problems"


def test_rerun_is_a_no_op(files, built, monkeypatch):
  out, _ = built
  mtimes = {
    n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.endswith((".tfrecord", ".model"))
  }

  def fail(*args, **kwargs):
    raise AssertionError("decoded a video on a rerun")

  monkeypatch.setattr(build_shards, "decode_clip", fail)
  summaries = msrvtt.build_msrvtt(
    **_paths(files, out),
    fps=FPS,
    short_side=SHORT_SIDE,
    num_shards=NUM_SHARDS,
    max_skipped_fraction=0.5,
    tokenizer_vocab_size=60,
  )
  assert {
    s: (v["shards_written"], v["clips"], v["skipped"], v["total"], v["ok"])
    for s, v in summaries.items()
  } == {"train": (0, 3, 1, 4, True), "test": (0, 2, 0, 2, True)}
  assert mtimes == {n: os.stat(out / n).st_mtime_ns for n in mtimes}
  # Another train list is other annotations: refused, not mixed into these shards.
  other = files / "other_train.txt"
  other.write_text("video1\nvideo0\n")
  with pytest.raises(ValueError, match="annotations_sha256"):
    msrvtt.build_msrvtt(
      **dict(_paths(files, out), train_list=str(other), test_csv=None),
      fps=FPS,
      short_side=SHORT_SIDE,
      num_shards=NUM_SHARDS,
    )


def test_unknown_or_repeated_train_id_is_an_error(files, tmp_path):
  (tmp_path / "train.csv").write_text("video_id\nvideo0\nvideo9\nvideo1\n")
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="1 video\\(s\\) have no sentences .*: video9$"):
    msrvtt.build_msrvtt(**dict(_paths(files, out), train_list=str(tmp_path / "train.csv")))
  assert not out.exists()  # raised before anything was written
  (tmp_path / "twice.txt").write_text("video0\nvideo1\nvideo0\n")
  with pytest.raises(ValueError, match="more than once: video0$"):
    msrvtt.read_video_list(str(tmp_path / "twice.txt"))


def test_list_formats(files, tmp_path):
  # A plain one-id-per-line file reads like the CSV; other CSV columns are ignored.
  (tmp_path / "train.txt").write_text("\n".join(TRAIN_IDS) + "\n\n")
  (tmp_path / "wide.csv").write_text(
    "key,video_id\n" + "".join(f"k{i},{v}\n" for i, v in enumerate(TRAIN_IDS))
  )
  for name in ("train.txt", "wide.csv"):
    assert msrvtt.read_video_list(str(tmp_path / name)) == TRAIN_IDS
  assert msrvtt.read_video_list(str(files / "MSRVTT_train.9k.csv")) == TRAIN_IDS
  assert msrvtt.read_test_csv(str(files / "MSRVTT_JSFUSION_test.csv")) == [
    (video_id, sentence) for _, _, video_id, sentence in TEST_ROWS
  ]
  (tmp_path / "no_sentence.csv").write_text("key,vid_key,video_id\nret0,msr1,video1\n")
  with pytest.raises(ValueError, match="lacks the column\\(s\\) \\['sentence'\\]"):
    msrvtt.read_test_csv(str(tmp_path / "no_sentence.csv"))
  # An empty sentence skips its video (listed, like any bad caption) and names the sentence.
  entries = msrvtt.train_entries({"video0": ["a dog", " "]}, ["video0"])
  assert entries[0].error == "empty caption (caption 1 of 2)"
  assert entries[0].captions == ("a dog", " ") and entries[0].video == "video0.mp4"


def test_captions_schema_field():
  record = schema.VideoRecord(
    video_id="v",
    frames=[b"\xff\xd8"],
    caption="a dog",
    height=1,
    width=1,
    captions=["a dog", "un chien — 犬"],
  )
  parsed = schema.parse_sequence_example(schema.to_sequence_example(record).SerializeToString())
  assert _texts(parsed["captions"]) == ["a dog", "un chien — 犬"]
  # No captions: the field is not written at all, so single-caption records keep their bytes
  # and older shards (which never had it) parse as an empty [0] string tensor.
  single = schema.to_sequence_example(
    schema.VideoRecord(video_id="v", frames=[b"\xff\xd8"], caption="a dog", height=1, width=1)
  )
  assert "captions" not in single.context.feature
  parsed = schema.parse_sequence_example(single.SerializeToString())
  assert parsed["captions"].dtype == tf.string and parsed["captions"].shape == (0,)
  assert parsed["caption"].numpy() == b"a dog"
  with pytest.raises(ValueError, match="is not captions\\[0\\]"):
    schema.to_sequence_example(
      schema.VideoRecord(
        video_id="v", frames=[b"\xff\xd8"], caption="a cat", height=1, width=1, captions=["a dog"]
      )
    )
