"""The tf.data pipeline against the batch contract, determinism, resume and host sharding."""

import collections
import itertools

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import input_pipeline
from data_pipelines import schema
from data_pipelines import tokenizer as tokenizer_lib
from svilm import data_setup


def _pipeline(config, files, *, train, batch_size=4, **kwargs):
  tokenizer = tokenizer_lib.Tokenizer(data_setup.prepare(config).tokenizer_path)
  return data_setup.make_dataset(
    config, files, tokenizer, batch_size=batch_size, train=train, **kwargs
  )


def _take(ds, n):
  return list(itertools.islice(input_pipeline.as_numpy(ds), n))


def test_train_batch_matches_contract(tiny):
  (files,) = data_setup.prepare(tiny).train_files
  (batch,) = _take(_pipeline(tiny, files, train=True), 1)
  d = tiny.data
  expected = {
    "video": ((4, d.num_frames, d.resolution, d.resolution, 3), np.float32),
    "text_tokens": ((4, d.max_text_len), np.int32),
    "text_mask": ((4, d.max_text_len), np.int32),
    "noun_tokens": ((4, d.num_nouns, d.max_noun_len), np.int32),
    "noun_mask": ((4, d.num_nouns, d.max_noun_len), np.int32),
    "noun_valid": ((4, d.num_nouns), np.int32),
    "index": ((4,), np.int32),
  }
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  assert 0.0 <= batch["video"].min() and batch["video"].max() <= 1.0
  assert (batch["text_mask"][:, 0] == 1).all()  # [CLS] is always there
  assert (batch["noun_valid"][:, 0] == 1).all()  # every caption names an object


def test_same_seed_same_batches_and_resume_skips_exactly(tiny):
  (files,) = data_setup.prepare(tiny).train_files
  first = _take(_pipeline(tiny, files, train=True, seed=3), 4)
  again = _take(_pipeline(tiny, files, train=True, seed=3), 4)
  other = _take(_pipeline(tiny, files, train=True, seed=4), 4)
  resumed = _take(_pipeline(tiny, files, train=True, seed=3, start_index=2 * 4), 2)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert any(
    not np.array_equal(a["index"], b["index"]) or not np.array_equal(a["video"], b["video"])
    for a, b in zip(first, other)
  )
  for a, b in zip(first[2:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_eval_pass_is_deterministic_and_annotations_follow_the_nouns(tiny):
  files = data_setup.prepare(tiny).eval_files
  batches = _take(_pipeline(tiny, files, train=False, with_annotations=True), 100)
  again = _take(_pipeline(tiny, files, train=False, with_annotations=True), 100)
  assert len(batches) == len(again) > 0
  for a, b in zip(batches, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Rebuild the first example's noun boxes straight from its record.
  record = schema.parse_sequence_example(next(iter(tf.data.TFRecordDataset(files[0]))))
  frame_ids = input_pipeline.sample_frame_indices(
    tf.shape(record["frames"])[0], tiny.data.num_frames, tiny.data.frame_stride, tf.constant(0.5)
  ).numpy()
  first = batches[0]
  for k, obj in enumerate(record["noun_object"].numpy()[: tiny.data.num_nouns]):
    np.testing.assert_allclose(first["noun_boxes"][0, k], record["boxes"].numpy()[frame_ids, obj])
    np.testing.assert_array_equal(
      first["noun_visible"][0, k], record["visible"].numpy()[frame_ids, obj]
    )


def test_sample_frame_indices():
  sample = lambda n, f, s, o: (
    input_pipeline.sample_frame_indices(tf.constant(n), f, s, tf.constant(o, tf.float32))
    .numpy()
    .tolist()
  )
  assert sample(16, 8, 2, 0.0) == [0, 2, 4, 6, 8, 10, 12, 14]
  assert sample(20, 4, 2, 0.5) == [7, 9, 11, 13]  # 14 valid starts, floor(0.5 * 14)
  assert sample(20, 4, 2, 0.99) == [13, 15, 17, 19]
  assert sample(3, 4, 1, 0.5) == [0, 1, 2, 2]  # short clips repeat the last frame


def test_host_shards_are_disjoint_and_cover_everything():
  files = [f"train-{i:05d}" for i in range(5)]
  parts = [input_pipeline.host_shards(files, i, 2) for i in range(2)]
  assert not set(parts[0]) & set(parts[1])
  assert sorted(parts[0] + parts[1]) == files
  with pytest.raises(ValueError, match="cannot feed 8 hosts"):
    input_pipeline.host_shards(files, 0, 8)


def test_list_shards_names_the_missing_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="No shard files match"):
    input_pipeline.list_shards(str(tmp_path), "train")


def test_augmented_training_is_clip_consistent_seeded_and_resumable(tiny):
  tiny.data.train_crop_area = (0.3, 0.6)
  tiny.data.train_flip = True
  tiny.data.normalization = "imagenet"
  (files,) = data_setup.prepare(tiny).train_files
  first = _take(_pipeline(tiny, files, train=True, seed=5), 3)
  resumed = _take(_pipeline(tiny, files, train=True, seed=5, start_index=4), 2)
  for a, b in zip(first[1:], resumed):
    np.testing.assert_array_equal(a["video"], b["video"])
  tiny.data.train_crop_area = (1.0, 1.0)
  tiny.data.train_flip = False
  plain = _take(_pipeline(tiny, files, train=True, seed=5), 1)[0]
  np.testing.assert_array_equal(plain["index"], first[0]["index"])  # same examples...
  assert not np.allclose(plain["video"], first[0]["video"])  # ...other pixels
  assert first[0]["video"].shape == plain["video"].shape
  assert first[0]["video"].min() < 0.0  # imagenet-normalised


def _caption_ids(files, unique=True):
  ids = []
  for serialized in tf.data.TFRecordDataset(files):
    caption = schema.parse_sequence_example(serialized, with_annotations=False)["caption"]
    ids.append(int(tf.strings.to_hash_bucket_fast(caption, 2**31 - 1)))
  return set(ids) if unique else ids


def test_weighted_mixture_draws_in_proportion_and_is_reproducible(tiny):
  sources = data_setup.prepare(tiny)
  (train,), val = sources.train_files, sources.eval_files
  from_val = _caption_ids(val) - _caption_ids(train)

  def fraction_from_val(weights, seed=0):
    batches = _take(
      _pipeline(tiny, [train, val], train=True, seed=seed, weights=weights, with_annotations=True),
      25,
    )
    ids = np.concatenate([b["caption_id"] for b in batches])
    return np.mean([i in from_val for i in ids]), ids

  share, ids = fraction_from_val([0.75, 0.25])
  assert 0.12 <= share <= 0.4, share  # 100 draws with p = 0.25
  np.testing.assert_array_equal(fraction_from_val([0.75, 0.25])[1], ids)
  assert fraction_from_val([1.0, 0.0])[0] == 0.0
  with pytest.raises(ValueError, match="one non-negative weight per dataset"):
    _pipeline(tiny, [train, val], train=True, weights=[1.0])


def test_two_hosts_read_disjoint_halves_of_the_whole_set(tiny):
  files = data_setup.prepare(tiny).eval_files
  assert len(files) == 2
  seen = []
  for host in range(2):
    mine = input_pipeline.host_shards(files, host, 2)
    batches = _take(_pipeline(tiny, mine, train=False, batch_size=1, with_annotations=True), 999)
    seen.append(collections.Counter(int(b["caption_id"][0]) for b in batches))
    assert seen[-1] == collections.Counter(_caption_ids(mine, unique=False))
  # Captions may repeat across videos, so compare multisets: together, every record once.
  assert seen[0] + seen[1] == collections.Counter(_caption_ids(files, unique=False))
  assert sum(seen[0].values()) > 0 and sum(seen[1].values()) > 0


def test_stream_split_hosts_together_yield_the_one_host_batches(tiny):
  # host_split="stream": with augmentation on, hosts 0 and 1 of 2 (batch 4 each) must give
  # exactly the rows of one host's batch of 8, in order, also when resuming mid-stream.
  tiny.data.train_crop_area = (0.5, 1.0)
  tiny.data.train_flip = True
  (files,) = data_setup.prepare(tiny).train_files
  whole = _take(_pipeline(tiny, files, train=True, batch_size=8, seed=5), 3)
  hosts = [
    _take(_pipeline(tiny, files, train=True, batch_size=4, seed=5, host_slice=(h, 2)), 3)
    for h in range(2)
  ]
  resumed = [
    _take(
      _pipeline(tiny, files, train=True, batch_size=4, seed=5, start_index=8, host_slice=(h, 2)), 2
    )
    for h in range(2)
  ]
  for step, batch in enumerate(whole):
    for key in batch:
      joined = np.concatenate([hosts[0][step][key], hosts[1][step][key]])
      np.testing.assert_array_equal(joined, batch[key], err_msg=key)
      if step:
        joined = np.concatenate([resumed[0][step - 1][key], resumed[1][step - 1][key]])
        np.testing.assert_array_equal(joined, batch[key], err_msg=f"resumed {key}")
  assert not np.array_equal(hosts[0][0]["video"], hosts[1][0]["video"])


def test_eval_scores_every_clip_padding_the_last_batch_and_hosts_split_it(tiny):
  # 32 held-out clips in global batches of 12: 12 + 12 + 8 real rows, the last batch padded
  # with copies of its last real clip (valid 0); two hosts (6 rows each) together give exactly
  # the one-host batches.
  files = data_setup.prepare(tiny).eval_files
  whole = _take(_pipeline(tiny, files, train=False, batch_size=12, with_annotations=True), 9)
  assert [int(b["valid"].sum()) for b in whole] == [12, 12, 8]
  assert [len(b["valid"]) for b in whole] == [12, 12, 12]
  last = whole[-1]
  np.testing.assert_array_equal(last["index"][8:], [last["index"][7]] * 4)
  np.testing.assert_array_equal(last["video"][11], last["video"][7])
  real_ids = np.concatenate([b["caption_id"][b["valid"] == 1] for b in whole])
  assert collections.Counter(real_ids.tolist()) == collections.Counter(
    _caption_ids(files, unique=False)
  )
  hosts = [
    _take(
      _pipeline(tiny, files, train=False, batch_size=6, with_annotations=True, host_slice=(h, 2)), 9
    )
    for h in range(2)
  ]
  for step, batch in enumerate(whole):
    for key in batch:
      joined = np.concatenate([hosts[0][step][key], hosts[1][step][key]])
      np.testing.assert_array_equal(joined, batch[key], err_msg=key)


def test_sample_captions_draws_each_clips_caption_from_its_list(tiny, tmp_path):
  # Records with three captions each: training draws one per (seed, stream index), only from
  # the clip's own list; without sample_captions it is always `caption` (= captions[0]).
  tokenizer = tokenizer_lib.Tokenizer(data_setup.prepare(tiny).tokenizer_path)
  (files,) = data_setup.prepare(tiny).train_files
  path = str(tmp_path / "multi-00000.tfrecord")
  words = ["red", "blue", "green"]
  with tf.io.TFRecordWriter(path) as writer:
    for i, serialized in enumerate(itertools.islice(tf.data.TFRecordDataset(files[0]), 4)):
      example = tf.train.SequenceExample.FromString(serialized.numpy())
      captions = [f"a {w} circle number {i}" for w in words]
      context = example.context.feature
      context["caption"].bytes_list.value[:] = [captions[0].encode()]
      context["captions"].bytes_list.value[:] = [c.encode() for c in captions]
      writer.write(example.SerializeToString())
  encode = lambda text: tuple(tokenizer.encode([text], tiny.data.max_text_len)[0][0])
  options = {encode(f"a {w} circle number {i}"): (i, w) for i in range(4) for w in words}

  def drawn(sample):
    batches = _take(
      _pipeline(tiny, [path], train=True, batch_size=4, seed=1, sample_captions=sample), 6
    )
    return [options[tuple(row)] for b in batches for row in b["text_tokens"]]

  sampled, fixed = drawn(True), drawn(False)
  assert {w for _, w in fixed} == {"red"}
  assert {w for _, w in sampled} == set(words)
  assert sampled == drawn(True)  # deterministic in (seed, stream index)
