"""tf.data input for pretraining, evaluation and tasks: shards on disk -> per-host numpy batches.

One path for every dataset: ShapesWorld and real video both arrive as TFRecord shards in the
schema of `data_pipelines/schema.py` and go through `make_dataset_from_ops`: the record stream,
host split, resume and evaluation padding here, the per-example and per-batch preprocessing as
a list of ops (data_pipelines/ops.py). `make_dataset` is the pretraining op list built from its
flags.

The batch contract (the one place it is written down; models, losses and evaluators rely on it).
Each key is written by the op named in brackets. Pretraining batches (`make_dataset`):

  video         float32 [B, T, R, R, 3]  RGB, T = num_frames sampled with frame_stride, R x R
                                         crops (see Augmentation), in [0, 1] or normalised
                                         [Frames, Crop, Flip, Normalize]
  text_tokens   int32   [B, L]           [CLS] + caption pieces, padded with 0 [Caption,
                                         Tokenize("caption", name="text")]
  text_mask     int32   [B, L]           1 on real tokens
  noun_tokens   int32   [B, K, Ln]       [CLS] + pieces of noun_prompt.format(noun) [Nouns,
                                         Tokenize("nouns", name="noun", prompt=noun_prompt)]
  noun_mask     int32   [B, K, Ln]       token mask of noun_tokens
  noun_valid    int32   [B, K]           1 where the caption has a k-th noun phrase [Nouns]
  index         int32   [B]              position of the example in the record stream (with
                                         host_slice: the stream all hosts share) [every dataset]

evaluation batches (train=False) additionally carry

  valid         int32   [B]              1 for a real clip, 0 for padding of the last batch
                                         [every dataset]

and with `with_annotations=True` (evaluation) additionally

  noun_boxes    float32 [B, K, T, 4]     box of the object noun k refers to, in each sampled
                                         frame, (ymin, xmin, ymax, xmax) normalised to [0, 1]
                                         of the crop [NounBoxes]
  noun_visible  int32   [B, K, T]        1 where that object is visible (0 for unknown objects)
  caption_id    int32   [B]              a 31-bit hash of the caption (finds duplicate captions;
                                         a collision can only drop a clip from retrieval)
                                         [CaptionId]

Batches of `make_dataset_from_ops` hold `index` (and `valid` when train=False) plus the keys of
their ops: those above, and

  video         float32 [B, V, T, R, R, 3] instead, with multi-view testing: V = temporal clips x
                                         spatial crops of each video [Views, Normalize]
  view_valid    int32   [B, V]           1 for each view [Views]
  label         int32   [B]              the clip's first action class, -1 without one [Label]
  label_valid   int32   [B]              1 where the clip has an action class
  question_tokens, question_mask
                int32   [B, Nq, Lq]      up to Nq (num_questions) questions of the clip
                                         [Questions, Tokenize("question")]
  answer        int32   [B, Nq]          each answer's id in the Questions op's vocabulary; -1
                                         out of it (still answer_valid 1: it counts, as wrong)
                                         or in a padding slot [Questions]
  answer_valid  int32   [B, Nq]          1 on the clip's questions, 0 on padding slots
  segments      int32   [B, S, 2]        per timed segment [a, b): sampled frames a..b-1 lie in
                                         it (sampled-frame units) [Segments]
  segment_valid int32   [B, S]           1 for a segment covering at least one sampled frame
  object_boxes  float32 [B, T, O, 4]     every object's box in each sampled frame, in [0, 1]
                                         of the crop, zeros past the clip's objects [Boxes]
  object_visible int32  [B, T, O]        1 where the object is visible in the crop
  object_valid  int32   [B, O]           1 for the clip's objects (O = max_objects)
  object_masks  int32   [B, T, R, R]     object index maps cropped like the video: 0
                                         background, o + 1 object o [Masks]

Box and mask keys follow the crop window and, after Flip, the flip.

Cut-and-paste (`fg_mask`) is built on the device inside the train step (svilm/losses.py), so
the background video comes from the global batch and the pasting is part of the jitted step.

Determinism and resume: the stream is a pure function of (files, seed, host). The training
stream repeats and shuffles with fixed seeds; per-example randomness (temporal offsets, crops,
flips, caption and question draws) is derived from the example's stream index with stateless
ops (data_pipelines/ops.py). Resuming at step s therefore skips s * per_host_batch serialised
records before any decoding, and yields exactly the batches an uninterrupted run would have
seen next.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

import tensorflow as tf

from data_pipelines import ops
from data_pipelines import schema
from data_pipelines import tokenizer as tokenizer_lib

# Frame sampling lives with the Frames op; this name stays for existing callers.
sample_frame_indices = ops.sample_frame_indices


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Spatial settings. Training crops a random window when crop_area[0] < 1 (else the centre
  square, as evaluation always does) and flips with probability 1/2 when `flip`."""

  crop_area: tuple[float, float] = (1.0, 1.0)  # fraction of the frame area
  crop_aspect_ratio: tuple[float, float] = (0.75, 4 / 3)
  flip: bool = False
  normalization: str = "unit"  # see video_ops.NORMALIZATIONS


def graph_fn(fn):
  """`fn` as tf.data should trace it: without AutoGraph. Our ops are written in graph form
  (tf.cond, tf.where, tf.while_loop; Python `if` and `for` only over Python values), so
  AutoGraph's source rewrite changes nothing they compute and only costs start-up: it made
  building the tiny config's training dataset take 1.8 s instead of 0.5 s (same batches)."""
  return tf.autograph.experimental.do_not_convert(fn)


def list_shards(path: str, split: str | None = None) -> list[str]:
  """Resolves a shard directory or glob to a sorted list of files.

  A directory yields its `{split}-*.tfrecord` files (all `*.tfrecord` when split is None).
  Raises FileNotFoundError naming the path when nothing matches.
  """
  path = path if "://" in path else os.path.expanduser(path)  # gs://... is read as is
  if tf.io.gfile.isdir(path):
    pattern = os.path.join(path, f"{split}-*.tfrecord" if split else "*.tfrecord")
  else:
    pattern = path
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(
      f"No shard files match {pattern!r} (data.path={path!r}, split={split!r})"
    )
  return files


def host_shards(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """The disjoint subset of `files` that host `process_index` reads (round robin)."""
  if len(files) < process_count:
    raise ValueError(
      f"{len(files)} shard files cannot feed {process_count} hosts; write at "
      "least one shard per host"
    )
  return list(files[process_index::process_count])


def record_stream(files: Sequence[str], *, train: bool, seed: int) -> tf.data.Dataset:
  """Serialised records of one dataset: files shuffled and repeated when training."""
  files_ds = tf.data.Dataset.from_tensor_slices(list(files))
  if train:
    files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
  return files_ds.interleave(
    tf.data.TFRecordDataset,
    cycle_length=min(len(files), 8),
    block_length=1,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )


def clip_ops(
  *,
  num_frames: int,
  frame_stride: int,
  resolution: int,
  augment: Augmentation,
  train: bool,
  seed: int,
) -> list[ops.Op]:
  """The clip ops of every video batch: frames, crop, flip (when `augment.flip`), normalize.

  `num_frames` frames `frame_stride` apart (random start when training, centred when
  evaluating), cropped and resized to `resolution` per `augment`.
  """
  example_ops = [
    ops.Frames(num_frames, frame_stride, train=train, seed=seed),
    ops.Crop(resolution, augment.crop_area, augment.crop_aspect_ratio, train=train, seed=seed),
  ]
  if augment.flip:
    example_ops.append(ops.Flip(train=train, seed=seed))
  example_ops.append(ops.Normalize(augment.normalization))
  return example_ops


def make_dataset(
  files: Sequence[str] | Sequence[Sequence[str]],
  *,
  tokenizer: tokenizer_lib.Tokenizer,
  batch_size: int,
  num_frames: int,
  frame_stride: int,
  resolution: int,
  max_text_len: int,
  num_nouns: int,
  max_noun_len: int,
  noun_prompt: str,
  train: bool,
  seed: int = 0,
  shuffle_buffer: int = 1024,
  start_index: int = 0,
  with_annotations: bool = False,
  max_examples: int = 0,
  augment: Augmentation = Augmentation(),
  weights: Sequence[float] | None = None,
  host_slice: tuple[int, int] | None = None,
  sample_captions: bool = False,
) -> tf.data.Dataset:
  """The pretraining batches of the contract above: `make_dataset_from_ops` (the stream,
  hosts, resume and evaluation padding are described there) with the ops of these settings.

  Clips: `num_frames` frames `frame_stride` apart (random start when training, centred when
  evaluating), cropped and resized to `resolution` per `augment`. Text: the caption tokenised to
  `max_text_len`, the first `num_nouns` nouns formatted into `noun_prompt` and tokenised to
  `max_noun_len`. with_annotations: also noun_boxes, noun_visible and caption_id.
  sample_captions (training): the caption is drawn uniformly from the record's `captions`
  (stateless in (seed, stream index)); records with no `captions` list use `caption`.
  """
  example_ops = clip_ops(
    num_frames=num_frames,
    frame_stride=frame_stride,
    resolution=resolution,
    augment=augment,
    train=train,
    seed=seed,
  )
  if with_annotations:
    # CaptionId before Caption: the id names the clip's primary caption even when training
    # draws another one. NounBoxes after Flip: the boxes follow a flipped clip.
    example_ops += [ops.CaptionId(), ops.NounBoxes(num_nouns)]
  example_ops += [ops.Caption(sample=sample_captions, train=train, seed=seed), ops.Nouns(num_nouns)]
  batch_ops = [
    ops.Tokenize(tokenizer, "caption", max_text_len, name="text"),
    ops.Tokenize(tokenizer, "nouns", max_noun_len, name="noun", prompt=noun_prompt),
  ]
  return make_dataset_from_ops(
    files,
    example_ops=example_ops,
    batch_ops=batch_ops,
    batch_size=batch_size,
    train=train,
    seed=seed,
    shuffle_buffer=shuffle_buffer,
    start_index=start_index,
    max_examples=max_examples,
    weights=weights,
    host_slice=host_slice,
  )


def make_dataset_from_ops(
  files: Sequence[str] | Sequence[Sequence[str]],
  *,
  example_ops: Sequence[ops.Op],
  batch_ops: Sequence[ops.Op] = (),
  batch_size: int,
  train: bool,
  seed: int = 0,
  shuffle_buffer: int = 1024,
  start_index: int = 0,
  max_examples: int = 0,
  weights: Sequence[float] | None = None,
  host_slice: tuple[int, int] | None = None,
) -> tf.data.Dataset:
  """The batched dataset over `files` (this host's subset, or all files with `host_slice`):
  every record through `example_ops`, every batch through `batch_ops` (data_pipelines/ops.py).

  Each record is parsed (with its per-frame annotation lists when an op sets
  `needs_annotations`) and run through `ops.apply_example_ops` with its stream index; the
  batch holds the keys the ops write plus `index` (and `valid` when train=False). Build the ops
  with this call's `train` and `seed`: the stream and the per-example draws then share one seed.
  train=True: endless, shuffled (files and records, seeded), batches of exactly `batch_size`;
  `start_index` records of the stream are skipped first (resume).
  With `weights`, `files` is one file list per dataset and each record is drawn from dataset
  i with probability weights[i] / sum(weights) (seeded, so the mixture is reproducible too).
  train=False: one deterministic pass in file order; `max_examples` > 0 stops after that many
  records. Every record is evaluated: the last global batch is padded to full size with copies
  of its last real record, marked `valid` = 0 (so padding never changes a metric, and a padded
  row is a real clip wherever another row borrows it, e.g. as a cut-and-paste background).
  host_slice=(host, num_hosts): `files` is the whole dataset, read identically by every host;
  of each global batch of `batch_size * num_hosts` records this host keeps rows
  [host * batch_size, (host + 1) * batch_size) before decoding them. Stream positions (and so
  the per-example randomness and `start_index`) are global, so the hosts together produce
  exactly the batches one host with `batch_size * num_hosts` would: training and evaluation
  then do not depend on the number of hosts.
  """
  if weights is None:
    ds = record_stream(files, train=train, seed=seed)
  else:
    if not train or len(weights) != len(files) or min(weights) < 0 or sum(weights) <= 0:
      raise ValueError(
        f"A mixture needs train=True and one non-negative weight per dataset "
        f"(got {len(files)} datasets, weights {list(weights)})"
      )
    streams = [
      record_stream(f, train=True, seed=seed + 1000 * (i + 1)) for i, f in enumerate(files)
    ]
    ds = tf.data.Dataset.sample_from_datasets(
      streams, weights=[float(w) for w in weights], seed=seed + 2
    )
  example_ops, batch_ops = list(example_ops), list(batch_ops)
  with_annotations = ops.needs_annotations(example_ops)

  def example_fn(index, serialized):
    record = schema.parse_sequence_example(serialized, with_annotations=with_annotations)
    return ops.apply_example_ops(example_ops, record, index)

  def batch_fn(batch):
    for op in batch_ops:
      batch = op(batch)
    return batch

  if train:
    ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
  elif max_examples:
    ds = ds.take(max_examples)
  ds = ds.enumerate()
  if start_index:
    ds = ds.skip(start_index)  # before any decoding: skipping costs only reading records
  if not train:
    host, num_hosts = host_slice or (0, 1)
    ds = _padded_host_rows(ds, batch_size, host, num_hosts)
    ds = ds.map(
      graph_fn(lambda index, record, valid: {**example_fn(index, record), "valid": valid}),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
  else:
    if host_slice is not None:
      host, num_hosts = host_slice
      begin = host * batch_size
      ds = ds.batch(batch_size * num_hosts, drop_remainder=True)
      ds = ds.map(
        graph_fn(
          lambda index, record: (
            index[begin : begin + batch_size],
            record[begin : begin + batch_size],
          )
        )
      ).unbatch()
    ds = ds.map(graph_fn(example_fn), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  if batch_ops:
    ds = ds.map(graph_fn(batch_fn), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def _padded_host_rows(
  ds: tf.data.Dataset, batch_size: int, host: int, num_hosts: int
) -> tf.data.Dataset:
  """(index, record) -> (index, record, valid): this host's rows of each global batch of
  `batch_size * num_hosts` records, the last global batch padded by repeating its last record
  (valid 0)."""
  global_batch, begin = batch_size * num_hosts, host * batch_size

  def pad_and_slice(index, record):
    count = tf.shape(index)[0]
    rows = tf.concat([tf.range(count), tf.fill([global_batch - count], count - 1)], axis=0)
    rows = rows[begin : begin + batch_size]
    valid = tf.cast(tf.range(global_batch) < count, tf.int32)[begin : begin + batch_size]
    return tf.gather(index, rows), tf.gather(record, rows), valid

  return ds.batch(global_batch).map(graph_fn(pad_and_slice)).unbatch()


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict]:
  """Iterates a dataset as dicts of numpy arrays."""
  return iter(ds.as_numpy_iterator())
