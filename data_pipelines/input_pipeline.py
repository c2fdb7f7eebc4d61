"""tf.data input for pretraining and its evaluation: shards on disk -> per-host numpy batches.

One path for every dataset: ShapesWorld and real video both arrive as TFRecord shards in the
schema of `data_pipelines/schema.py` and go through `make_dataset`.

The batch contract (the one place it is written down; models, losses and evaluators rely on it):

  video         float32 [B, T, R, R, 3]  RGB, T = num_frames sampled with frame_stride, R x R
                                         crops (see Augmentation), in [0, 1] or normalised
  text_tokens   int32   [B, L]           [CLS] + caption pieces, padded with 0
  text_mask     int32   [B, L]           1 on real tokens
  noun_tokens   int32   [B, K, Ln]       [CLS] + pieces of noun_prompt.format(noun)
  noun_mask     int32   [B, K, Ln]       token mask of noun_tokens
  noun_valid    int32   [B, K]           1 where the caption has a k-th noun phrase
  index         int32   [B]              position of the example in this host's stream

evaluation batches (train=False) additionally carry

  valid         int32   [B]              1 for a real clip, 0 for padding of the last batch

and with `with_annotations=True` (evaluation) additionally

  noun_boxes    float32 [B, K, T, 4]     box of the object noun k refers to, in each sampled
                                         frame, (ymin, xmin, ymax, xmax) normalised to [0, 1]
  noun_visible  int32   [B, K, T]        1 where that object is visible (0 for unknown objects)
  caption_id    int32   [B]              a 31-bit hash of the caption (finds duplicate captions;
                                         a collision can only drop a clip from retrieval)

Cut-and-paste (`fg_mask`) is built on the device inside the train step (svilm/losses.py), so
the background video comes from the global batch and the pasting is part of the jitted step.

Determinism and resume: the stream is a pure function of (files, seed, host). The training
stream repeats and shuffles with fixed seeds; per-example randomness (temporal offsets) is
derived from the example's stream index with stateless ops. Resuming at step s therefore
skips s * per_host_batch serialised records before any decoding, and yields exactly the batches
an uninterrupted run would have seen next.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from data_pipelines import schema
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import video_ops

@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Spatial settings. Training crops a random window when crop_area[0] < 1 (else the centre
  square, as evaluation always does) and flips with probability 1/2 when `flip`."""
  crop_area: tuple[float, float] = (1.0, 1.0)       # fraction of the frame area
  crop_aspect_ratio: tuple[float, float] = (0.75, 4 / 3)
  flip: bool = False
  normalization: str = "unit"                       # see video_ops.NORMALIZATIONS


def list_shards(path: str, split: str | None = None) -> list[str]:
  """Resolves a shard directory or glob to a sorted list of files.

  A directory yields its `{split}-*.tfrecord` files (all `*.tfrecord` when split is None).
  Raises FileNotFoundError naming the path when nothing matches.
  """
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    pattern = os.path.join(path, f"{split}-*.tfrecord" if split else "*.tfrecord")
  else:
    pattern = path
  files = sorted(glob.glob(pattern))
  if not files:
    raise FileNotFoundError(f"No shard files match {pattern!r} (data.path={path!r}, "
                            f"split={split!r})")
  return files


def host_shards(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """The disjoint subset of `files` that host `process_index` reads (round robin)."""
  if len(files) < process_count:
    raise ValueError(f"{len(files)} shard files cannot feed {process_count} hosts; write at "
                     "least one shard per host")
  return list(files[process_index::process_count])


def sample_frame_indices(num_available: tf.Tensor, num_frames: int, stride: int,
                         offset_fraction: tf.Tensor) -> tf.Tensor:
  """Indices of `num_frames` frames `stride` apart, starting at a fraction of the free range.

  offset_fraction in [0, 1) picks the start among the valid starts (0.5: centred). Clips
  shorter than the span repeat their last frame.
  """
  span = (num_frames - 1) * stride + 1
  max_start = tf.maximum(tf.cast(num_available, tf.int32) - span, 0)
  start = tf.cast(tf.floor(offset_fraction * tf.cast(max_start + 1, tf.float32)), tf.int32)
  start = tf.minimum(start, max_start)
  indices = start + tf.range(num_frames, dtype=tf.int32) * stride
  return tf.minimum(indices, tf.cast(num_available, tf.int32) - 1)


def _pad_or_trim(values: tf.Tensor, length: int, pad_value) -> tf.Tensor:
  values = values[:length]
  padding = length - tf.shape(values)[0]
  return tf.concat([values, tf.fill([padding], tf.constant(pad_value, values.dtype))], axis=0)


def _example_fn(*, num_frames, frame_stride, resolution, num_nouns, train, seed,
                with_annotations, augment: Augmentation, sample_captions: bool = False):
  """Builds the per-example map: parse, sample frames, decode, crop, gather annotations.

  sample_captions (training): the caption is drawn uniformly from the record's `captions`
  (stateless in (seed, stream index)); records with no `captions` list use `caption`.
  """

  def fn(index, serialized):
    record = schema.parse_sequence_example(serialized, with_annotations=with_annotations)
    num_available = tf.shape(record["frames"])[0]
    # Stateless randomness: a function of (seed, stream index), never of the resume point.
    example_seed = lambda salt: tf.stack([tf.cast(seed + salt, tf.int64), index])
    offset = tf.random.stateless_uniform([], seed=example_seed(0)) if train else 0.5
    frame_ids = sample_frame_indices(num_available, num_frames, frame_stride, offset)
    frames = video_ops.decode_jpeg_frames(tf.gather(record["frames"], frame_ids))
    height, width = tf.shape(frames)[1], tf.shape(frames)[2]
    if train and augment.crop_area[0] < 1.0:
      window = video_ops.random_crop_window(height, width, example_seed(1), augment.crop_area,
                                            augment.crop_aspect_ratio)
    else:
      window = video_ops.center_crop_window(height, width)
    video = video_ops.crop_and_resize(frames, window, resolution)
    if train and augment.flip:
      flip = tf.random.stateless_uniform([], seed=example_seed(2)) < 0.5
      video = tf.cond(flip, lambda: video_ops.flip_left_right(video), lambda: video)
    nouns = record["nouns"]
    num_valid = tf.minimum(tf.shape(nouns)[0], num_nouns)
    caption = record["caption"]
    if train and sample_captions:
      captions = record["captions"]
      count = tf.shape(captions)[0]
      pick = tf.cast(tf.random.stateless_uniform([], seed=example_seed(3)) *
                     tf.cast(tf.maximum(count, 1), tf.float32), tf.int32)
      caption = tf.cond(count > 0, lambda: captions[tf.minimum(pick, count - 1)],
                        lambda: caption)
    out = {
        "index": tf.cast(index, tf.int32),
        "video": video_ops.normalize(video, augment.normalization),
        "caption": caption,
        "nouns": _pad_or_trim(nouns, num_nouns, ""),
        "noun_valid": tf.cast(tf.range(num_nouns) < num_valid, tf.int32),
    }
    if with_annotations:
      objects = _pad_or_trim(tf.cast(record["noun_object"], tf.int32), num_nouns, -1)
      num_objects = tf.shape(record["boxes"])[1]
      known = (objects >= 0) & (objects < num_objects) & (out["noun_valid"] > 0)
      safe = tf.where(known, objects, 0)
      # Evaluation only (centre crop, no flip): boxes follow the crop; an object cropped away
      # counts as not visible.
      boxes, inside = video_ops.crop_boxes(tf.gather(record["boxes"], frame_ids), window,
                                           height, width)                   # [T, O, 4]
      visible = tf.gather(record["visible"], frame_ids) * tf.cast(inside, tf.int64)  # [T, O]
      # Real video has O = 0: pad one dummy object so the gather below stays in range.
      boxes = tf.pad(boxes, [[0, 0], [0, 1], [0, 0]])
      visible = tf.pad(visible, [[0, 0], [0, 1]])
      noun_boxes = tf.transpose(tf.gather(boxes, safe, axis=1), [1, 0, 2])   # [K, T, 4]
      noun_visible = tf.transpose(tf.gather(visible, safe, axis=1), [1, 0])  # [K, T]
      out["noun_boxes"] = tf.where(known[:, None, None], noun_boxes, 0.0)
      out["noun_visible"] = tf.where(known[:, None], tf.cast(noun_visible, tf.int32), 0)
      out["caption_id"] = tf.cast(
          tf.strings.to_hash_bucket_fast(record["caption"], 2**31 - 1), tf.int32)
    return out

  return fn


def _tokenize_fn(tokenizer: tokenizer_lib.Tokenizer, *, max_text_len, max_noun_len,
                 noun_prompt):
  """Batched tokenisation (one Python call per batch) of captions and prompted nouns."""
  prefix, _, suffix = noun_prompt.partition("{}")

  def encode(texts, max_len):
    ids, mask = tokenizer.encode([t for t in texts], max_len)
    return ids.astype(np.int32), mask.astype(np.int32)

  def fn(batch):
    captions = batch["caption"]
    text_tokens, text_mask = tf.numpy_function(
        lambda t: encode(t, max_text_len), [captions], [tf.int32, tf.int32], stateful=False)
    nouns = batch["nouns"]                                   # [B, K]
    prompted = tf.strings.join([prefix, tf.reshape(nouns, [-1]), suffix])
    noun_tokens, noun_mask = tf.numpy_function(
        lambda t: encode(t, max_noun_len), [prompted], [tf.int32, tf.int32], stateful=False)
    batch_size, num_nouns = tf.shape(nouns)[0], tf.shape(nouns)[1]
    # Strings stop here: every key that leaves the pipeline is a numeric array.
    out = {k: v for k, v in batch.items() if k not in ("nouns", "caption")}
    out["text_tokens"] = tf.ensure_shape(text_tokens, [None, max_text_len])
    out["text_mask"] = tf.ensure_shape(text_mask, [None, max_text_len])
    shape = [batch_size, num_nouns, max_noun_len]
    # Padded noun slots still get prompt tokens; noun_valid masks them out of every loss.
    out["noun_tokens"] = tf.reshape(noun_tokens, shape)
    out["noun_mask"] = tf.reshape(noun_mask, shape)
    return out

  return fn


def record_stream(files: Sequence[str], *, train: bool, seed: int) -> tf.data.Dataset:
  """Serialised records of one dataset: files shuffled and repeated when training."""
  files_ds = tf.data.Dataset.from_tensor_slices(list(files))
  if train:
    files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
  return files_ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                             block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)


def make_dataset(files: Sequence[str] | Sequence[Sequence[str]], *,
                 tokenizer: tokenizer_lib.Tokenizer, batch_size: int, num_frames: int,
                 frame_stride: int, resolution: int, max_text_len: int, num_nouns: int,
                 max_noun_len: int, noun_prompt: str, train: bool, seed: int = 0,
                 shuffle_buffer: int = 1024, start_index: int = 0,
                 with_annotations: bool = False, max_examples: int = 0,
                 augment: Augmentation = Augmentation(),
                 weights: Sequence[float] | None = None,
                 host_slice: tuple[int, int] | None = None,
                 sample_captions: bool = False) -> tf.data.Dataset:
  """The batched dataset over `files` (this host's subset, or all files with `host_slice`).

  train=True: endless, shuffled (files and records, seeded), random temporal offsets, batches
  of exactly `batch_size`; `start_index` records of the stream are skipped first (resume).
  With `weights`, `files` is one file list per dataset and each record is drawn from dataset
  i with probability weights[i] / sum(weights) (seeded, so the mixture is reproducible too).
  train=False: one deterministic pass in file order with centred frame sampling;
  `max_examples` > 0 stops after that many records. Every record is evaluated: the last global
  batch is padded to full size with copies of its last real record, marked `valid` = 0 (so
  padding never changes a metric, and a padded row is a real clip wherever another row borrows
  it, e.g. as a cut-and-paste background).
  host_slice=(host, num_hosts): `files` is the whole dataset, read identically by every host;
  of each global batch of `batch_size * num_hosts` records this host keeps rows
  [host * batch_size, (host + 1) * batch_size) before decoding them. Stream positions (and so
  the per-example randomness and `start_index`) are global, so the hosts together produce
  exactly the batches one host with `batch_size * num_hosts` would: training and evaluation
  then do not depend on the number of hosts.
  sample_captions: see `_example_fn` (training with several captions per video).
  """
  if weights is None:
    ds = record_stream(files, train=train, seed=seed)
  else:
    if not train or len(weights) != len(files) or min(weights) < 0 or sum(weights) <= 0:
      raise ValueError(f"A mixture needs train=True and one non-negative weight per dataset "
                       f"(got {len(files)} datasets, weights {list(weights)})")
    streams = [record_stream(f, train=True, seed=seed + 1000 * (i + 1))
               for i, f in enumerate(files)]
    ds = tf.data.Dataset.sample_from_datasets(streams, weights=[float(w) for w in weights],
                                              seed=seed + 2)
  example_fn = _example_fn(num_frames=num_frames, frame_stride=frame_stride,
                           resolution=resolution, num_nouns=num_nouns, train=train, seed=seed,
                           with_annotations=with_annotations, augment=augment,
                           sample_captions=sample_captions)
  if train:
    ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
  elif max_examples:
    ds = ds.take(max_examples)
  ds = ds.enumerate()
  if start_index:
    ds = ds.skip(start_index)   # before any decoding: skipping costs only reading records
  if not train:
    host, num_hosts = host_slice or (0, 1)
    ds = _padded_host_rows(ds, batch_size, host, num_hosts)
    ds = ds.map(lambda index, record, valid: {**example_fn(index, record), "valid": valid},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    if host_slice is not None:
      host, num_hosts = host_slice
      begin = host * batch_size
      ds = ds.batch(batch_size * num_hosts, drop_remainder=True)
      ds = ds.map(lambda index, record: (index[begin:begin + batch_size],
                                         record[begin:begin + batch_size])).unbatch()
    ds = ds.map(example_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.map(_tokenize_fn(tokenizer, max_text_len=max_text_len, max_noun_len=max_noun_len,
                           noun_prompt=noun_prompt), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def _padded_host_rows(ds: tf.data.Dataset, batch_size: int, host: int, num_hosts: int
                      ) -> tf.data.Dataset:
  """(index, record) -> (index, record, valid): this host's rows of each global batch of
  `batch_size * num_hosts` records, the last global batch padded by repeating its last record
  (valid 0)."""
  global_batch, begin = batch_size * num_hosts, host * batch_size

  def pad_and_slice(index, record):
    count = tf.shape(index)[0]
    rows = tf.concat([tf.range(count), tf.fill([global_batch - count], count - 1)], axis=0)
    rows = rows[begin:begin + batch_size]
    valid = tf.cast(tf.range(global_batch) < count, tf.int32)[begin:begin + batch_size]
    return tf.gather(index, rows), tf.gather(record, rows), valid

  return ds.batch(global_batch).map(pad_and_slice).unbatch()


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict]:
  """Iterates a dataset as dicts of numpy arrays."""
  return iter(ds.as_numpy_iterator())
