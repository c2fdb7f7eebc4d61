"""Paths that are local or on a bucket (gs://...): the one rule for resolving them.

A multi-host TPU slice needs a workdir that every host sees, so workdirs, checkpoints, shards
and tokenizers may all live on a bucket. A local path is expanded (`~`) and made absolute; a
path with a scheme (`gs://`, or TensorFlow's in-memory `ram://` in the tests) is kept as
given. Every file operation on them goes through `tf.io.gfile`, which serves both; Orbax reaches
the same files through etils.epath.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf


def is_url(path: str) -> bool:
  return "://" in path


def resolve(path: str) -> str:
  """`path` made absolute (local) or as given (a URL)."""
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def write_json(path: str, value: Any, **kwargs) -> None:
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(value, **kwargs) + "\n")


def write_text(path: str, text: str) -> None:
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(text)


def read_json(path: str) -> Any:
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def mtime(path: str) -> int:
  """Modification time in nanoseconds."""
  return tf.io.gfile.stat(path).mtime_nsec
