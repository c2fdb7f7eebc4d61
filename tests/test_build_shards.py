"""Tests for data_pipelines/build_shards.py and annotations.py on tiny videos made here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import annotations
from data_pipelines import build_shards
from data_pipelines import schema
from tests.conftest import REPO_ROOT

H264 = "libx264" if "libx264" in av.codecs_available else "h264"
FPS, SHORT_SIDE = 8.0, 32
CAFE = "un café crème — 猫 sur la table"


def _write_video(path, codec, width, height, rate, num_frames, container_format=None):
  """Frame i is uniformly grey with level 12 * i (mod 252): a decoded frame tells its index."""
  with av.open(path, "w", format=container_format) as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(num_frames):
      image = np.full((height, width, 3), 12 * i % 252, np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _write_audio_only(path):
  with av.open(path, "w") as container:
    stream = container.add_stream("aac", rate=8000)
    frame = av.AudioFrame.from_ndarray(
      np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
    )
    frame.sample_rate = 8000
    for packet in [*stream.encode(frame), *stream.encode()]:
      container.mux(packet)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """videos/ with good and bad files, and CSV, JSONL and ActivityNet annotations."""
  base = tmp_path_factory.mktemp("build_shards")
  root = base / "videos"
  (root / "sub").mkdir(parents=True)
  _write_video(str(root / "a.mp4"), H264, 64, 48, 10, 20)  # 2 s, landscape
  _write_video(str(root / "sub" / "b.mp4"), "mpeg4", 64, 36, 25, 25)  # 1 s
  _write_video(
    str(root / "long.mkv"),
    "mpeg4",
    48,
    64,
    10,
    30,  # 3 s, portrait
    container_format="matroska",
  )
  (root / "zero.mp4").write_bytes(b"")
  good = (root / "a.mp4").read_bytes()
  (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
  (root / "text.mp4").write_text("not a video\n")
  _write_audio_only(str(root / "audio.mp4"))
  (base / "outside.mp4").write_bytes(good)
  rows = [
    ("a.mp4", "a man rides a brown horse on the beach", "", ""),
    ("sub/b.mp4", CAFE, "", ""),
    ("a.mp4", "a red circle moves left", "0.5", "1.5"),
    ("zero.mp4", "a dog", "", ""),
    ("truncated.mp4", "a dog", "", ""),
    ("text.mp4", "a dog", "", ""),
    ("missing.mp4", "a dog", "", ""),
    ("../outside.mp4", "a dog", "", ""),
    ("a.mp4", "  ", "", ""),
    ("audio.mp4", "a dog", "", ""),
    ("a.mp4", "a dog", "5", "6"),
  ]
  lines = ["video,caption,start,end"] + [",".join(r) for r in rows]
  csv_bytes = "\n".join(lines).encode() + b"\na.mp4,caf\xe9 au lait,,\n"
  (base / "clips.csv").write_bytes(csv_bytes)
  with open(base / "clips.jsonl", "w") as f:
    f.write(json.dumps({"path": "sub/b.mp4", "caption": "a ball", "start": 0.25}) + "\n")
    f.write(json.dumps({"video": "/etc/passwd", "caption": "absolute"}) + "\n")
    f.write("{not json\n")
  anet = {
    "long": {
      "duration": 3.0,
      "timestamps": [[0.5, 1.5], [1.0, 3.0], [2.5, 4.0], [3.5, 4.0]],
      "sentences": ["a man opens a door", "a dog barks", "the end", "after"],
    }
  }
  (base / "anet.json").write_text(json.dumps(anet))
  return base


def _build(data, name, out, **kwargs):
  kwargs = dict(
    dict(num_shards=3, fps=FPS, short_side=SHORT_SIDE, max_skipped_fraction=1.0), **kwargs
  )
  return build_shards.build(str(data / name), str(data / "videos"), str(out), **kwargs)


def _records(out, split="train"):
  records = {}
  for name in sorted(os.listdir(out)):
    if name.startswith(f"{split}-") and name.endswith(".tfrecord"):
      for serialized in tf.data.TFRecordDataset(os.path.join(out, name)):
        r = schema.parse_sequence_example(serialized)
        records[r["video_id"].numpy().decode()] = r
  return records


def _skipped(out, split="train"):
  with open(os.path.join(out, f"{split}-skipped.tsv"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  assert rows[0] == ["index", "video_id", "video", "reason"]
  return {row[1]: row[3] for row in rows[1:]}


@pytest.fixture(scope="module")
def csv_out(data):
  out = data / "out_csv"
  return out, _build(data, "clips.csv", out)


def test_csv_converts_good_videos(csv_out):
  out, summary = csv_out
  records = _records(out)
  # id -> (frames: round(duration * fps), caption)
  expected = {
    "a.mp4#0": (16, "a man rides a brown horse on the beach"),
    "sub/b.mp4": (8, CAFE),
    "a.mp4#1": (8, "a red circle moves left"),
  }
  assert sorted(records) == sorted(expected)
  for video_id, (num_frames, caption) in expected.items():
    r = records[video_id]
    assert r["caption"].numpy().decode("utf-8") == caption
    assert r["source"].numpy() == b"clips" and r["fps"].numpy() == FPS
    assert r["schema_version"].numpy() == schema.SCHEMA_VERSION
    frames = [tf.io.decode_jpeg(f).numpy() for f in r["frames"]]
    assert len(frames) == num_frames
    assert min(frames[0].shape[:2]) == SHORT_SIDE
    assert (r["height"].numpy(), r["width"].numpy()) == frames[0].shape[:2]
    assert r["num_objects"].numpy() == 0 and r["boxes"].shape == (num_frames, 0, 4)
    assert list(r["noun_object"].numpy()) == [-1] * len(r["nouns"].numpy())
  assert records["a.mp4#0"]["frames"].shape == (16,)
  assert [n.decode() for n in records["a.mp4#0"]["nouns"].numpy()] == [
    "man",
    "brown horse",
    "beach",
  ]
  assert tf.io.decode_jpeg(records["a.mp4#0"]["frames"][0]).shape == (32, 43, 3)
  assert tf.io.decode_jpeg(records["sub/b.mp4"]["frames"][0]).shape == (32, 57, 3)
  # Nearest frame by time: sample k of [0.5, 1.5) at 8 fps is t = 0.5 + k / 8 of a 10 fps
  # video whose frame i has level 12 i. Ties (t = 0.75, 1.25) go to the earlier frame.
  levels = [tf.io.decode_jpeg(f).numpy().mean() for f in records["a.mp4#1"]["frames"]]
  np.testing.assert_allclose(levels, [12 * i for i in (5, 6, 7, 9, 10, 11, 12, 14)], atol=4)
  assert summary["clips"] == 3 and summary["frames"] == 32
  assert (summary["skipped"], summary["total"], summary["num_shards"]) == (9, 12, 3)
  assert summary["line"] == (
    f"build_shards: wrote 3 clips in 3 shards; skipped 9 of 12 (75.0%) -> {out}/train-skipped.tsv"
  )


def test_csv_reports_every_bad_entry(csv_out):
  out, _ = csv_out
  skipped = _skipped(out)
  assert skipped.pop("a.mp4#3") == "no frames in [5, 6) s"
  assert skipped.pop("a.mp4#4") == "caption is not valid UTF-8"
  assert skipped.pop("a.mp4#2") == "empty caption"
  assert skipped.pop("zero.mp4") == "empty file"
  assert skipped.pop("missing.mp4") == "missing file"
  assert skipped.pop("../outside.mp4") == "path escapes video_root"
  assert skipped.pop("audio.mp4") == "no video stream"
  assert skipped.pop("truncated.mp4").startswith("cannot decode")
  assert skipped.pop("text.mp4").startswith("cannot decode")
  assert not skipped
  manifest = json.loads((out / "train-manifest.json").read_text())
  assert manifest["complete"] and manifest["counts"]["entries"] == 12


def test_rerun_is_a_no_op(data, csv_out, monkeypatch):
  out, summary = csv_out
  mtimes = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.endswith(".tfrecord")}

  def fail(*args, **kwargs):
    raise AssertionError("decoded a video on a rerun")

  monkeypatch.setattr(build_shards, "decode_clip", fail)
  again = _build(data, "clips.csv", out)
  assert again["shards_written"] == 0 and summary["shards_written"] == 3
  assert {k: v for k, v in again.items() if k != "shards_written"} == {
    k: v for k, v in summary.items() if k != "shards_written"
  }
  assert mtimes == {n: os.stat(out / n).st_mtime_ns for n in mtimes}


def test_other_settings_are_an_error(data, csv_out):
  out, _ = csv_out
  with pytest.raises(ValueError, match=r"\['fps', 'short_side'\]"):
    _build(data, "clips.csv", out, fps=4.0, short_side=16)


def test_partial_run_completes_with_the_same_bytes(data, csv_out, tmp_path):
  out, _ = csv_out
  partial = tmp_path / "partial"
  partial.mkdir()
  for name in os.listdir(out):
    (partial / name).write_bytes((out / name).read_bytes())
  # A killed run: shard 1 never renamed into place, its temporary file half-written.
  os.remove(partial / "train-00001-of-00003.tfrecord")
  (partial / ".tmp-train-00001-of-00003.tfrecord").write_bytes(b"half a shard")
  summary = _build(data, "clips.csv", partial)
  assert summary["shards_written"] == 1 and summary["clips"] == 3
  assert not [n for n in os.listdir(partial) if n.startswith(".tmp-")]
  for name in build_shards.shard_names("train", 3):
    assert (partial / name).read_bytes() == (out / name).read_bytes()


def test_two_workers_write_identical_bytes(data, csv_out, tmp_path):
  out, _ = csv_out
  summary = _build(data, "clips.csv", tmp_path, workers=2)
  assert summary["shards_written"] == 3
  for name in build_shards.shard_names("train", 3):
    assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_activitynet_segments_and_tokenizer(data, tmp_path):
  summary = _build(data, "anet.json", tmp_path, split="val", num_shards=2, tokenizer_vocab_size=60)
  records = _records(tmp_path, "val")
  # [0.5, 1.5), [1.0, 3.0) and [2.5, 3.0) (the video ends at 3 s) of long.mkv, portrait.
  assert {k: len(r["frames"]) for k, r in records.items()} == {
    "long#0": 8,
    "long#1": 16,
    "long#2": 4,
  }
  assert tf.io.decode_jpeg(records["long#0"]["frames"][0]).shape == (43, 32, 3)
  assert _skipped(tmp_path, "val") == {"long#3": "no frames in [3.5, 4) s"}
  assert summary["tokenizer_path"] == str(tmp_path / "tokenizer.model")
  ids, _ = build_shards.tokenizer_lib.Tokenizer(summary["tokenizer_path"]).encode(
    ["a dog barks"], 8
  )
  assert 1 not in ids  # no unknown pieces: the caption was in the training text
  # A second split into the same directory must not replace this tokenizer silently.
  with pytest.raises(ValueError, match="tokenizer.model exists"):
    _build(data, "clips.csv", tmp_path, tokenizer_vocab_size=60)


def test_cli_exit_status_follows_max_skipped_fraction(data, tmp_path):
  command = [
    sys.executable,
    "-m",
    "data_pipelines.build_shards",
    f"--input={data / 'clips.jsonl'}",
    f"--video_root={data / 'videos'}",
    f"--output={tmp_path}",
    "--num_shards=2",
    "--fps=8",
    "--short_side=32",
  ]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  # 2 of the 3 entries are bad (an absolute path, a line that is not JSON).
  failed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
  assert failed.returncode == 1, failed.stderr
  assert (
    f"wrote 1 clips in 2 shards; skipped 2 of 3 (66.7%) -> {tmp_path}/train-skipped.tsv"
    in failed.stdout
  )
  assert failed.stderr.splitlines()[-1] == (
    "FATAL build_shards: 66.7% of the entries were skipped, more than "
    "--max_skipped_fraction=0.1; the shards of the rest are written. See why in "
    f"{tmp_path}/train-skipped.tsv, or raise --max_skipped_fraction"
  )
  skipped = _skipped(tmp_path)
  assert skipped["/etc/passwd"] == "path escapes video_root"
  assert skipped["line 3"].startswith("bad annotation: line 3")
  assert len(_records(tmp_path)["sub/b.mp4"]["frames"]) == 6  # [0.25, 1.0) at 8 fps
  passed = subprocess.run(
    command + ["--max_skipped_fraction=0.7"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
  )
  assert passed.returncode == 0, passed.stderr


def test_annotation_columns_and_ids(tmp_path):
  path = tmp_path / "webvid.csv"
  path.write_text("videoid,name,page_dir\n7,a cat,001\n7,a cat again,001\n8,,002\n")
  entries = annotations.read_annotations(str(path))
  assert [(e.video, e.caption, e.id, e.error) for e in entries] == [
    ("001/7.mp4", "a cat", "7#0", ""),
    ("001/7.mp4", "a cat again", "7#1", ""),
    ("002/8.mp4", "", "8", "empty caption"),
  ]
  bad = tmp_path / "bad.csv"
  bad.write_text("video,caption,start,end\nx.mp4,a,2,1\ny.mp4,b,soon,\n")
  assert [e.error for e in annotations.read_annotations(str(bad))] == [
    "bad annotation: end 1.0 <= start 2.0",
    "bad annotation: start 'soon' is not a number",
  ]
  # The column names real collections use, and columns named by the user.
  for header in ("video_path,caption", "filename,text", "path,sentence"):
    aliased = tmp_path / "aliased.csv"
    aliased.write_text(f"{header}\nx.mp4,a dog\n")
    (entry,) = annotations.read_annotations(str(aliased))
    assert (entry.video, entry.caption, entry.error) == ("x.mp4", "a dog", ""), header
  custom = tmp_path / "custom.csv"
  custom.write_text("clip,words,caption\nx.mp4,a dog,ignored\n")
  (entry,) = annotations.read_annotations(str(custom), video_column="clip", caption_column="words")
  assert (entry.video, entry.caption) == ("x.mp4", "a dog")
  (tmp_path / "no_caption.csv").write_text("video,words\nx.mp4,a\n")
  with pytest.raises(ValueError, match="has no caption column .*--caption_column=NAME"):
    annotations.read_annotations(str(tmp_path / "no_caption.csv"))
  with pytest.raises(ValueError, match="has no video column \\('clip2'\\)"):
    annotations.read_annotations(str(custom), video_column="clip2")


def test_cli_bad_header_is_one_fatal_line(tmp_path):
  (tmp_path / "clips.csv").write_text("clip,words\nx.mp4,a dog\n")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_pipelines.build_shards",
      f"--input={tmp_path / 'clips.csv'}",
      f"--output={tmp_path / 'out'}",
    ],
    cwd=REPO_ROOT,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  fatal = [line for line in result.stderr.splitlines() if line.startswith("FATAL")]
  assert fatal == [
    "FATAL build_shards: CSV header ['clip', 'words'] has no video column (one of filename, "
    "path, video, video_path, videoid); name yours with --video_column=NAME"
  ]


def test_schema_version_matches_schema():
  assert build_shards.SCHEMA_VERSION == schema.SCHEMA_VERSION


def test_sigkilled_build_completes_on_rerun(data, tmp_path):
  rows = ["video,caption"] + [f"long.mkv,clip number {i}" for i in range(48)]
  (tmp_path / "many.csv").write_text("\n".join(rows) + "\n")
  settings = ["--num_shards=8", f"--fps={FPS}", "--short_side=96", "--workers=1"]
  killed = tmp_path / "killed"
  process = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "data_pipelines.build_shards",
      f"--input={tmp_path / 'many.csv'}",
      f"--video_root={data / 'videos'}",
      f"--output={killed}",
      *settings,
    ],
    cwd=REPO_ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  names = build_shards.shard_names("train", 8)
  deadline = time.time() + 120
  while process.poll() is None and time.time() < deadline:
    if killed.is_dir() and names[0] in os.listdir(killed):
      break
    time.sleep(0.005)
  process.send_signal(signal.SIGKILL)
  process.wait()
  done = [n for n in names if (killed / n).exists()]
  assert process.returncode == -signal.SIGKILL and 0 < len(done) < 8, done
  build_shards.build(
    str(tmp_path / "many.csv"),
    str(data / "videos"),
    str(killed),
    num_shards=8,
    fps=FPS,
    short_side=96,
  )
  clean = tmp_path / "clean"
  build_shards.build(
    str(tmp_path / "many.csv"),
    str(data / "videos"),
    str(clean),
    num_shards=8,
    fps=FPS,
    short_side=96,
  )
  for name in names:
    assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
  assert not [n for n in os.listdir(killed) if n.startswith(".tmp-")]
