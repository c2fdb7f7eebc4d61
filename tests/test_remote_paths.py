"""Workdirs, checkpoints, shards and tokenizers on a bucket (gs://...), as a multi-host TPU
slice needs: a URL is kept as given (it once became the local directory ./gs:/bucket/...) and
every file operation on it goes through tf.io.gfile. TensorFlow's in-memory ram:// file system
stands in for the bucket (there is no network here); Orbax's own reads and writes, which reach a
bucket through tensorstore, are not exercised."""

import os

import pytest
import tensorflow as tf

from data_pipelines import tokenizer as tokenizer_lib
from svilm import checkpointing
from svilm import configuration
from svilm import data_setup
from svilm import paths


def test_a_url_is_kept_as_given_and_a_local_path_made_absolute():
  assert paths.resolve("gs://bucket/run") == "gs://bucket/run"
  assert checkpointing.checkpoint_dir("gs://bucket/run") == "gs://bucket/run/checkpoints"
  assert paths.resolve("~/run") == os.path.join(os.path.expanduser("~"), "run")
  assert paths.resolve("run") == os.path.join(os.getcwd(), "run")


def _upload(local_dir: str, url: str) -> None:
  tf.io.gfile.makedirs(url)
  for name in os.listdir(local_dir):
    tf.io.gfile.copy(os.path.join(local_dir, name), f"{url}/{name}", overwrite=True)


def test_shards_and_tokenizer_on_a_bucket(tiny):
  local = data_setup.shapesworld_path(tiny)
  url = "ram://bucket/shards"
  _upload(local, url)
  tiny.data.path = url
  sources = data_setup.prepare(tiny)
  assert sources.train_files == [[f"{url}/train-0000{i}-of-00002.tfrecord" for i in (0, 1)]]
  assert sources.eval_files == [f"{url}/val-0000{i}-of-00002.tfrecord" for i in (0, 1)]
  assert sources.tokenizer_path == f"{url}/tokenizer.model"
  remote = tokenizer_lib.Tokenizer(sources.tokenizer_path)
  mine = tokenizer_lib.Tokenizer(os.path.join(local, "tokenizer.model"))
  assert remote.vocab_size == mine.vocab_size == data_setup.vocab_size(tiny)
  texts = ["a red circle moves left", "two squares"]
  for got, want in zip(remote.encode(texts, 12), mine.encode(texts, 12)):
    assert (got == want).all()
  tiny.data.eval_split = "test"
  with pytest.raises(configuration.ConfigError, match=f"{url} has no 'test' split"):
    data_setup.prepare(tiny)
  tiny.data.path = "ram://bucket/missing"
  with pytest.raises(configuration.ConfigError, match="ram://bucket/missing does not exist"):
    data_setup.prepare(tiny)


def test_init_from_finds_the_newest_step_on_a_bucket():
  for step in (3, 12):
    tf.io.gfile.makedirs(f"ram://bucket/run/checkpoints/{step}/state")
  tf.io.gfile.makedirs("ram://bucket/run/checkpoints/corrupt-20/state")
  assert checkpointing.resolve_step_dir("ram://bucket/run") == "ram://bucket/run/checkpoints/12"
  step_dir = "ram://bucket/run/checkpoints/3"
  assert checkpointing.resolve_step_dir(step_dir) == step_dir
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpointing.resolve_step_dir("ram://bucket/none")
