"""Where the data comes from: the configured shards, or ShapesWorld built on first use."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import logging
import ml_collections
import tensorflow as tf

from data_pipelines import input_pipeline
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.shapesworld import build as shapesworld_build
from svilm import configuration
from svilm import paths


@dataclasses.dataclass(frozen=True)
class DataSources:
  train_files: list[list[str]]  # one file list per training dataset
  train_weights: list[float] | None  # mixture weights, None for a single dataset
  eval_files: list[str]
  tokenizer_path: str


def shapesworld_path(config: ml_collections.ConfigDict) -> str:
  """The ShapesWorld directory for this generator config (a hash keeps variants apart)."""
  settings = config.data.shapesworld.to_dict()
  settings.pop("num_workers", None)  # how it is built, not what is built
  generator = json.dumps(settings, sort_keys=True, default=str)
  digest = hashlib.sha256(generator.encode()).hexdigest()[:10]
  return os.path.join(os.path.expanduser(config.data.shapesworld_dir), digest)


def prepare(config: ml_collections.ConfigDict) -> DataSources:
  """Resolves shard files and the tokenizer, building ShapesWorld when data.path is empty.

  data.path may name several datasets, comma separated, mixed with data.mixture_weights
  (comma separated, one per dataset; empty = equal weights). The tokenizer defaults to
  tokenizer.model beside the first dataset; evaluation reads data.eval_path, or the
  eval_split of the first dataset.
  """
  data = config.data
  if data.path:
    roots = [p.strip() for p in data.path.split(",") if p.strip()]
    for root in roots:
      if not any(c in root for c in "*?[") and not tf.io.gfile.exists(paths.resolve(root)):
        raise configuration.ConfigError(
          f"data.path: {root} does not exist (a directory of shards from "
          "`python -m data_pipelines.build_shards`, or a glob of shard files)"
        )
    beside = os.path.join(paths.resolve(roots[0]), "tokenizer.model")
    if not data.tokenizer and not tf.io.gfile.exists(beside):
      raise configuration.ConfigError(
        f"data.path is set but data.tokenizer is empty and {beside} does not "
        "exist: pass --config.data.tokenizer=PATH.model (build_shards "
        "--tokenizer_vocab_size=N writes one beside the shards; or train one "
        "with `python -m data_pipelines.tokenizer`)"
      )
  else:
    roots = [shapesworld_path(config)]
    shapesworld_build.build(roots[0], data.shapesworld)  # a no-op once built
  weights = [float(w) for w in data.mixture_weights.split(",") if w.strip()] or None
  if weights is not None and len(weights) != len(roots):
    raise configuration.ConfigError(
      f"data.mixture_weights={data.mixture_weights!r} gives {len(weights)} "
      f"weights for the {len(roots)} datasets of data.path"
    )
  if weights is None and len(roots) > 1:
    weights = [1.0] * len(roots)
  tokenizer = paths.resolve(data.tokenizer or os.path.join(roots[0], "tokenizer.model"))
  if not tf.io.gfile.exists(tokenizer):
    raise configuration.ConfigError(f"data.tokenizer: {tokenizer} does not exist")
  if not data.eval_path and not tf.io.gfile.isdir(paths.resolve(roots[0])):
    raise configuration.ConfigError(
      f"data.path={roots[0]!r} is a glob, so it cannot also give the held-out "
      "split: pass --config.data.eval_path=DIR_OR_GLOB for evaluation"
    )
  eval_files = _shards(data.eval_path or roots[0], data.eval_split, "held-out")
  if not _any_record(eval_files):
    raise configuration.ConfigError(
      f"the held-out split ({len(eval_files)} files like {eval_files[0]}) holds no clips: "
      "evaluation would fail after training; rebuild it or point --config.data.eval_path "
      "at held-out shards"
    )
  return DataSources(
    train_files=[_shards(r, data.train_split, "training") for r in roots],
    train_weights=weights,
    eval_files=eval_files,
    tokenizer_path=tokenizer,
  )


def _shards(path: str, split: str, role: str) -> list[str]:
  """`input_pipeline.list_shards`, with a ConfigError that says how to make the missing split."""
  try:
    return input_pipeline.list_shards(path, split)
  except FileNotFoundError:
    if not tf.io.gfile.isdir(paths.resolve(path)):
      raise configuration.ConfigError(f"no shard files match {path} (the {role} data)") from None
    instead = (
      "--config.data.eval_path=DIR_OR_GLOB of held-out shards"
      if role == "held-out"
      else "--config.data.train_split=NAME of a split it has"
    )
    raise configuration.ConfigError(
      f"{path} has no {split!r} split ({split}-*.tfrecord) for the {role} data: build it with "
      f"`python -m data_pipelines.build_shards --output={path} --split={split} ...`, or pass "
      f"{instead}"
    ) from None


def _any_record(files: list[str]) -> bool:
  """Whether any of the TFRecord files holds a record (reads at most one per file)."""
  return any(any(True for _ in tf.data.TFRecordDataset(f).take(1)) for f in files)


def vocab_size(config: ml_collections.ConfigDict) -> int:
  """The text vocabulary size a run of `config` would have, reading no shards (--compile_only).

  model.text.vocab_size when set; else the tokenizer the run would load: data.tokenizer, or
  tokenizer.model beside the first dataset of data.path, or ShapesWorld's (built first if
  data.path is empty and it is not built yet, as the run itself would).
  """
  if config.model.text.vocab_size != -1:
    return config.model.text.vocab_size
  data = config.data
  if data.tokenizer:
    path = data.tokenizer
  elif data.path:
    path = os.path.join(data.path.split(",")[0].strip(), "tokenizer.model")
  else:
    path = os.path.join(shapesworld_path(config), "tokenizer.model")
    shapesworld_build.build(os.path.dirname(path), data.shapesworld)  # a no-op once built
  path = paths.resolve(path)
  if not tf.io.gfile.exists(path):
    raise configuration.ConfigError(
      f"the text vocabulary size comes from the tokenizer, and {path} does not exist: point "
      "--config.data.tokenizer at the sentencepiece model the run will use, or pass "
      "--config.model.text.vocab_size=N (e.g. 30522 for a BERT vocabulary)"
    )
  return tokenizer_lib.Tokenizer(path).vocab_size


def augmentation(config: ml_collections.ConfigDict) -> input_pipeline.Augmentation:
  """config.data's crop, flip and normalisation settings."""
  data = config.data
  return input_pipeline.Augmentation(
    crop_area=tuple(data.train_crop_area),
    crop_aspect_ratio=tuple(data.train_crop_aspect_ratio),
    flip=data.train_flip,
    normalization=data.normalization,
  )


def clip_ops(config: ml_collections.ConfigDict, *, train: bool, seed: int) -> list:
  """`input_pipeline.clip_ops` of config.data: frames, crop (random resized when training and
  data.train_crop_area[0] < 1, else the centre square), flip (data.train_flip), normalize."""
  data = config.data
  return input_pipeline.clip_ops(
    num_frames=data.num_frames,
    frame_stride=data.frame_stride,
    resolution=data.resolution,
    augment=augmentation(config),
    train=train,
    seed=seed,
  )


def make_dataset(
  config: ml_collections.ConfigDict, files, tokenizer, *, batch_size: int, train: bool, **kwargs
):
  """`input_pipeline.make_dataset` (clips, captions and prompted nouns) with the clip,
  augmentation and text settings of `config.data`."""
  data = config.data
  augment = augmentation(config)
  return input_pipeline.make_dataset(
    files,
    tokenizer=tokenizer,
    batch_size=batch_size,
    num_frames=data.num_frames,
    frame_stride=data.frame_stride,
    resolution=data.resolution,
    max_text_len=data.max_text_len,
    num_nouns=data.num_nouns,
    max_noun_len=data.max_noun_len,
    noun_prompt=data.noun_prompt,
    train=train,
    augment=augment,
    **kwargs,
  )


def train_dataset(
  config: ml_collections.ConfigDict,
  sources: DataSources,
  *,
  example_ops,
  batch_ops,
  start_index: int,
  process_index: int,
  process_count: int,
):
  """This host's training batches (global batch / hosts each) through a task's input ops,
  split between hosts per data.host_split. The ops must be built with train=True and
  seed=config.seed (the stream's seed)."""
  local_batch = config.batch_size // process_count
  if config.data.host_split == "stream":
    files, host_slice = sources.train_files, (process_index, process_count)
  else:
    files = [
      input_pipeline.host_shards(f, process_index, process_count) for f in sources.train_files
    ]
    host_slice = None
  if sources.train_weights is None:
    (files,) = files
  return input_pipeline.make_dataset_from_ops(
    files,
    example_ops=example_ops,
    batch_ops=batch_ops,
    batch_size=local_batch,
    train=True,
    seed=config.seed,
    shuffle_buffer=config.data.shuffle_buffer,
    start_index=start_index,
    weights=sources.train_weights,
    host_slice=host_slice,
  )


def stream_meta(config: ml_collections.ConfigDict, step: int, process_count: int) -> dict:
  """What a checkpoint records about the training stream after `step` steps."""
  return {
    "step": step,
    "examples": step * config.batch_size,
    "process_count": process_count,
    "host_split": config.data.host_split,
  }


def stream_start(config: ml_collections.ConfigDict, meta: dict | None, process_count: int) -> int:
  """Where this host's training stream resumes (records to skip), from a checkpoint's meta.

  host_split="stream": the global position, whatever the number of hosts then and now (an
  exact elastic restart). host_split="files": the host's own position in its file subset,
  exact when the number of hosts is unchanged; after a change each host skips its share of
  the examples already seen in its new subset, so the order differs from an uninterrupted run
  (logged as a warning).
  """
  if meta is None:
    return 0
  # Checkpoints before `examples` existed recorded only the per-host count.
  saved_hosts = meta.get("process_count", process_count)
  examples = meta.get("examples", meta.get("examples_per_host", 0) * saved_hosts)
  if examples != meta["step"] * config.batch_size:
    raise ValueError(
      f"Checkpoint {meta['step']} was written with a global batch of "
      f"{examples // max(meta['step'], 1)}, this run uses "
      f"{config.batch_size}: resuming would change the data order"
    )
  saved_split = meta.get("host_split", "files")
  if config.data.host_split == "stream" and saved_split == "stream":
    return examples
  if (config.data.host_split, saved_hosts) != (saved_split, process_count):
    logging.warning(
      "Resuming a run written by %d host(s) with host_split=%r on %d host(s) "
      "with host_split=%r: the training data order from here on differs from "
      "an uninterrupted run (use host_split='stream' for exact elastic "
      "restarts)",
      saved_hosts,
      saved_split,
      process_count,
      config.data.host_split,
    )
  return examples if config.data.host_split == "stream" else examples // process_count
