"""Tests for data_pipelines/tokenizer.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from data_pipelines import tokenizer

_CORPUS = [
  "a red circle moves left",
  "the blue square grows",
  "a green star shrinks",
  "what colour is the object that moves left?",
  "a video of a red circle",
  "a blue square moves right, then it disappears",
] * 5
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tok") / "tok.model")
  return tokenizer.train_tokenizer(_CORPUS, path, vocab_size=256)


def test_special_ids_and_determinism(model_path, tmp_path):
  tok = tokenizer.Tokenizer(model_path)
  assert (tok.pad_id, tok.cls_id) == (0, 2)
  sp = spm.SentencePieceProcessor(model_file=model_path)
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
  assert tok.vocab_size == sp.get_piece_size() < 256  # hard_vocab_limit=False
  again = tokenizer.train_tokenizer(_CORPUS, str(tmp_path / "again.model"), vocab_size=256)
  assert open(again, "rb").read() == open(model_path, "rb").read()


def test_encode_is_cls_pieces_pad(model_path):
  tok = tokenizer.Tokenizer(model_path)
  sp = spm.SentencePieceProcessor(model_file=model_path)
  # BPE keeps template words whole: "red circle" is exactly two pieces.
  pieces = [sp.piece_to_id("\u2581red"), sp.piece_to_id("\u2581circle")]
  assert 1 not in pieces
  ids, mask = tok.encode(["red circle"], max_len=6)
  np.testing.assert_array_equal(ids, [[2, pieces[0], pieces[1], 0, 0, 0]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0, 0]])
  assert ids.dtype == np.int32 and mask.dtype == np.int32


def test_truncation_bytes_and_round_trip(model_path):
  tok = tokenizer.Tokenizer(model_path)
  texts = ["a red circle moves left", "the blue square grows"]
  ids, mask = tok.encode(texts, max_len=16)
  assert (ids[:, 0] == tok.cls_id).all()
  assert tok.decode(ids) == texts and tok.decode(ids[1]) == texts[1]
  ids_b, mask_b = tok.encode([t.encode("utf-8") for t in texts], max_len=16)
  np.testing.assert_array_equal(ids, ids_b)
  np.testing.assert_array_equal(mask, mask_b)
  short, short_mask = tok.encode(texts, max_len=3)
  np.testing.assert_array_equal(short, ids[:, :3])
  np.testing.assert_array_equal(short_mask, np.ones((2, 3)))
  empty, empty_mask = tok.encode([""], max_len=4)
  np.testing.assert_array_equal(empty, [[2, 0, 0, 0]])
  np.testing.assert_array_equal(empty_mask, [[1, 0, 0, 0]])


def test_cli_on_text_file(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(_CORPUS) + "\n")
  output = tmp_path / "cli.model"
  subprocess.run(
    [
      sys.executable,
      "-m",
      "data_pipelines.tokenizer",
      f"--input={corpus}",
      f"--output={output}",
      "--vocab_size=128",
    ],
    cwd=_REPO,
    check=True,
    capture_output=True,
  )
  tok = tokenizer.Tokenizer(str(output))
  assert tok.decode(tok.encode(["a green star shrinks"], 10)[0][0]) == "a green star shrinks"
  direct = tokenizer.train_tokenizer(_CORPUS, str(tmp_path / "direct.model"), vocab_size=128)
  assert open(direct, "rb").read() == output.read_bytes()


def test_input_texts_reads_shards(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from data_pipelines import schema  # pylint: disable=g-import-not-at-top

  record = schema.VideoRecord(
    video_id="v0",
    frames=[b"x"],
    caption="a red circle grows",
    height=1,
    width=1,
    nouns=["red circle"],
    noun_object=[0],
    segment_start=[0],
    segment_end=[1],
    segment_action=[4],
    segment_object=[0],
    segment_caption=["the red circle grows"],
  )
  path = str(tmp_path / "train-00000-of-00001.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(schema.to_sequence_example(record).SerializeToString())
  text_file = tmp_path / "extra.txt"
  text_file.write_text("one line\n")
  assert list(tokenizer.input_texts([str(tmp_path / "*.tfrecord"), str(text_file)])) == [
    "a red circle grows",
    "the red circle grows",
    "red circle",
    "one line",
  ]
  with pytest.raises(FileNotFoundError):
    list(tokenizer.input_texts([str(tmp_path / "missing-*")]))
