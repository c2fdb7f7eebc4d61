"""SentencePiece tokenizer: training, loading, and fixed-length encoding for the text encoder.

Special ids are fixed: pad 0, unk 1, bos 2, eos 3. The bos piece doubles as [CLS]: `encode`
prepends it to every sequence because the text encoder pools its first token.

Train from the command line on shards in the data_pipelines.schema format (reads caption,
segment_caption and nouns) or on plain text files (one sentence per line):

  python -m data_pipelines.tokenizer --input='data/train-*.tfrecord' \
      --output=data/tokenizer.model --vocab_size=8000

A file whose name contains ".tfrecord" is read as shards, any other file as text.
"""

from __future__ import annotations

import glob
import io
import os
from typing import Iterable, List, Sequence, Tuple, Union

from absl import app
from absl import flags
from absl import logging
import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def train_tokenizer(
  texts: Iterable[Union[str, bytes]], model_path: str, vocab_size: int, model_type: str = "bpe"
) -> str:
  """Trains a SentencePiece model on `texts` and writes it to `model_path`.

  Deterministic: one thread and the whole corpus (no sentence sampling), so the same texts in
  the same order give the same model bytes. `hard_vocab_limit=False` lets a small template
  corpus end with fewer than `vocab_size` pieces instead of failing. BPE by default: on a
  template corpus the unigram model stops at ~80 pieces and splits common words ("whi" "le",
  "the" "n"), while BPE keeps every word whole. Returns `model_path`.
  """
  model = io.BytesIO()
  sentences = (t.decode("utf-8") if isinstance(t, bytes) else t for t in texts)
  spm.SentencePieceTrainer.train(
    sentence_iterator=(s for s in sentences if s),
    model_writer=model,
    vocab_size=vocab_size,
    model_type=model_type,
    character_coverage=1.0,
    pad_id=PAD_ID,
    unk_id=UNK_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  directory = os.path.dirname(os.path.abspath(model_path))
  os.makedirs(directory, exist_ok=True)
  # Write then rename: a reader never sees a half-written model.
  tmp_path = os.path.join(directory, f".tmp-{os.getpid()}.{os.path.basename(model_path)}")
  with open(tmp_path, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp_path, model_path)
  return model_path


class Tokenizer:
  """A trained SentencePiece model with [CLS]-first, fixed-length batch encoding."""

  def __init__(self, model_path: str):
    self.model_path = model_path
    if "://" in model_path:  # on a bucket (gs://...): sentencepiece reads local files only
      import tensorflow as tf

      with tf.io.gfile.GFile(model_path, "rb") as f:
        self._sp = spm.SentencePieceProcessor(model_proto=f.read())
    else:
      self._sp = spm.SentencePieceProcessor(model_file=model_path)
    if self._sp.pad_id() != PAD_ID or self._sp.bos_id() != BOS_ID:
      raise ValueError(
        f"{model_path}: expected pad_id {PAD_ID} and bos_id {BOS_ID}, got "
        f"{self._sp.pad_id()} and {self._sp.bos_id()}; train it with "
        "train_tokenizer"
      )

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def cls_id(self) -> int:
    return BOS_ID

  def encode(
    self, texts: Sequence[Union[str, bytes]], max_len: int
  ) -> Tuple[np.ndarray, np.ndarray]:
    """Encodes a batch to ids int32 [N, max_len] and mask int32 [N, max_len].

    Row n is [cls] + pieces(texts[n]), truncated to max_len and right-padded with pad_id;
    mask is 1 exactly on the non-pad positions. Accepts bytes (as tf.numpy_function passes).
    """
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1, got {max_len}")
    strings = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
    ids = np.full((len(strings), max_len), PAD_ID, np.int32)
    mask = np.zeros((len(strings), max_len), np.int32)
    for n, pieces in enumerate(self._sp.encode(strings, out_type=int)):
      row = [BOS_ID, *pieces][:max_len]
      ids[n, : len(row)] = row
      mask[n, : len(row)] = 1
    return ids, mask

  def decode(self, ids) -> Union[str, List[str]]:
    """Text of one id row ([L] -> str) or of a batch ([N, L] -> list of str); pad and cls
    ids are dropped."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
      return self._sp.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID)])
    return [self.decode(row) for row in ids]


def _shard_texts(path: str) -> Iterable[str]:
  # TF only for shards: plain-text training and the Tokenizer itself do not need it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from data_pipelines import schema  # pylint: disable=g-import-not-at-top

  for serialized in tf.data.TFRecordDataset(path):
    example = schema.parse_sequence_example(serialized, with_annotations=False)
    yield example["caption"].numpy().decode("utf-8")
    for field in ("segment_caption", "nouns"):
      yield from (v.decode("utf-8") for v in example[field].numpy())


def _text_lines(path: str) -> Iterable[str]:
  with open(path, encoding="utf-8") as f:
    yield from (line.strip() for line in f)


def input_texts(patterns: Sequence[str]) -> Iterable[str]:
  """Sentences of every file matching `patterns` (sorted per pattern), in order."""
  for pattern in patterns:
    paths = sorted(glob.glob(pattern))
    if not paths:
      raise FileNotFoundError(f"no file matches {pattern!r}")
    for path in paths:
      yield from (
        _shard_texts(path) if ".tfrecord" in os.path.basename(path) else _text_lines(path)
      )


def _define_flags() -> None:
  # Defined only when run as a program: importers (build.py, trainers) have flags of their own.
  flags.DEFINE_list("input", None, "Comma-separated globs: TFRecord shards or text files.")
  flags.DEFINE_string("output", None, "Where to write the model (PATH.model).")
  flags.DEFINE_integer(
    "vocab_size", 8000, "Target vocabulary size (an upper bound: small corpora give fewer pieces)."
  )
  flags.mark_flags_as_required(["input", "output"])


def main(argv: Sequence[str]) -> None:
  del argv
  path = train_tokenizer(input_texts(flags.FLAGS.input), flags.FLAGS.output, flags.FLAGS.vocab_size)
  logging.info("wrote %s with %d pieces", path, Tokenizer(path).vocab_size)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
