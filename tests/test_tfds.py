"""Tests for data_pipelines/tfds: `tfds.load` on ShapesWorld and on built svilm shards."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines import schema
from data_pipelines import tfds as svilm_tfds
from data_pipelines.shapesworld import build

tfds.disable_progress_bar()


def _tiny_generator_config():
  """The generator config behind `shapesworld/tiny`."""
  return svilm_tfds.Shapesworld.builder_configs["tiny"].generator_config()


def _index(video_id: bytes) -> int:
  return int(video_id.decode().split("-")[-1])


def _shard_kwargs(shard_dir):
  return {"download_config": tfds.download.DownloadConfig(manual_dir=shard_dir)}


@pytest.fixture(scope="module")
def shapesworld_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_shapesworld"))
  tfds.builder("shapesworld/tiny", data_dir=data_dir).download_and_prepare()
  return data_dir


def test_shapesworld_tiny_matches_generator(shapesworld_data_dir):
  config = _tiny_generator_config()
  ds = tfds.load("shapesworld/tiny", split="train", data_dir=shapesworld_data_dir)
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == 16
  assert sorted(_index(ex["video_id"]) for ex in examples) == list(range(16))
  for ex in examples:
    fields = build.video_fields(config, "train", _index(ex["video_id"]))
    assert ex["frames"].shape == (16, 64, 64, 3) and ex["frames"].dtype == np.uint8
    assert ex["caption"].decode() == fields["caption"]
    assert [n.decode() for n in ex["nouns"]] == list(fields["nouns"])
    assert list(ex["segment_start"]) == list(fields["segment_start"])
    np.testing.assert_array_equal(ex["boxes"], fields["boxes"])
    np.testing.assert_array_equal(ex["visible"], fields["visible"])
    masks = np.stack([np.asarray(Image.open(io.BytesIO(m))) for m in fields["masks"]])
    np.testing.assert_array_equal(ex["masks"][..., 0], masks)


def test_shapesworld_splits_and_stored_bytes(shapesworld_data_dir):
  builder = tfds.builder("shapesworld/tiny", data_dir=shapesworld_data_dir)
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
    "train": 16,
    "val": 8,
    "compositional": 4,
  }
  # The generator's JPEG and PNG bytes are stored verbatim (no decode/re-encode).
  config = _tiny_generator_config()
  skip = {"frames": tfds.decode.SkipDecoding(), "masks": tfds.decode.SkipDecoding()}
  for ex in builder.as_dataset(split="compositional", decoders=skip).as_numpy_iterator():
    fields = build.video_fields(config, "compositional", _index(ex["video_id"]))
    assert list(ex["frames"]) == fields["frames"]
    assert list(ex["masks"]) == fields["masks"]


def _read_shards(shard_dir, split):
  paths = sorted(tf.io.gfile.glob(os.path.join(shard_dir, f"{split}-*.tfrecord")))
  return list(tf.data.TFRecordDataset(paths).map(schema.parse_sequence_example).as_numpy_iterator())


def test_svilm_shards_match_source_shards(tmp_path):
  shard_dir = str(tmp_path / "shards")
  config = build.default_config()
  config.update(
    dict(
      num_train=8,
      num_val=4,
      num_compositional=2,
      num_shards_train=2,
      num_shards_val=1,
      num_shards_compositional=1,
      num_frames=6,
      num_workers=1,
      vocab_size=64,
    )
  )
  build.build(shard_dir, config)
  builder = tfds.builder("svilm_shards", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(**_shard_kwargs(shard_dir))
  assert set(builder.info.splits) == {"train", "val", "compositional"}
  for split, count in (("train", 8), ("val", 4), ("compositional", 2)):
    source = {r["video_id"]: r for r in _read_shards(shard_dir, split)}
    loaded = list(
      tfds.load(
        "svilm_shards",
        split=split,
        data_dir=str(tmp_path / "tfds"),
        download_and_prepare_kwargs=_shard_kwargs(shard_dir),
      ).as_numpy_iterator()
    )
    assert len(loaded) == len(source) == count
    assert {ex["caption"] for ex in loaded} == {r["caption"] for r in source.values()}
    for ex in loaded:
      record = source[ex["video_id"]]
      frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in record["frames"]])
      np.testing.assert_array_equal(ex["frames"], frames)
      np.testing.assert_array_equal(ex["boxes"], record["boxes"])
      np.testing.assert_array_equal(ex["visible"], record["visible"])
      assert list(ex["qa_answer"]) == list(record["qa_answer"])
      assert ex["fps"] == np.float32(8.0) and "masks" not in ex


def _jpeg(height, width, value):
  buffer = io.BytesIO()
  Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="JPEG")
  return buffer.getvalue()


def test_svilm_shards_real_video_of_varying_sizes(tmp_path):
  # Real video: no annotations, and frame size differs between videos.
  shard_dir = str(tmp_path / "shards")
  os.makedirs(shard_dir)
  records = [
    schema.VideoRecord(
      video_id="a",
      frames=[_jpeg(24, 40, 10)] * 3,
      caption="cat",
      height=24,
      width=40,
      nouns=["cat"],
      noun_object=[-1],
    ),
    schema.VideoRecord(
      video_id="b", frames=[_jpeg(32, 32, 200)] * 2, caption="dog", height=32, width=32
    ),
  ]
  with tf.io.TFRecordWriter(os.path.join(shard_dir, "test-00000-of-00001.tfrecord")) as writer:
    for record in records:
      writer.write(schema.to_sequence_example(record).SerializeToString())
  ds = tfds.load(
    "svilm_shards",
    split="test",
    data_dir=str(tmp_path / "tfds"),
    download_and_prepare_kwargs=_shard_kwargs(shard_dir),
  )
  examples = {ex["video_id"]: ex for ex in ds.as_numpy_iterator()}
  assert examples[b"a"]["frames"].shape == (3, 24, 40, 3)
  assert examples[b"b"]["frames"].shape == (2, 32, 32, 3)
  assert examples[b"a"]["boxes"].shape == (3, 0, 4)
  assert examples[b"b"]["visible"].shape == (2, 0)
  assert list(examples[b"a"]["noun_object"]) == [-1] and examples[b"b"]["nouns"].size == 0


def test_svilm_shards_without_shards_fails(tmp_path):
  with pytest.raises(ValueError, match="no {split}"):
    tfds.builder("svilm_shards", data_dir=str(tmp_path / "tfds")).download_and_prepare(
      **_shard_kwargs(str(tmp_path))
    )
