"""Feature extraction: a frozen S-ViLM video encoder slid over whole videos, one row per window.

The library behind `python -m svilm.extract_features` (the CLI, with the user-facing
description) and the temporal-localization task, which extracts on first use when
temporal_localization.features is empty. Keys: config.features (window_frames, stride_frames,
pooling, batch_size, init_from); the clip the encoder sees is config.data's (num_frames,
resolution, normalization); the encoder is config.model.video. Output format:
svilm/feature_store.py.

Window k of a video of T frames covers frames [k * stride, k * stride + window); the encoder
sees config.data.num_frames of them, window / num_frames apart, centre-cropped and resized as
in evaluation; its feature is the pooled `clip_features` of the encoder in inference mode
(classifier.PooledVideoFeatures). Long videos are decoded window by window (each JPEG frame
once, at most one window of frames held), never whole. A video's windows run in batches of
their own (padded to features.batch_size), so its features do not depend on which videos
came before it: a rerun after an interruption skips the .npy files already written and ends
with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

from absl import logging
from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from data_pipelines import input_pipeline
from data_pipelines import schema
from data_pipelines import video_ops
from svilm import checkpointing
from svilm import configuration
from svilm import data_setup
from svilm import feature_store
from svilm import param_mapping
from svilm import paths
from svilm.models import classifier

require = configuration.require
RANDOM = "random"  # features.init_from / --init_from: the encoder's fresh initialisation


def features_config() -> ml_collections.ConfigDict:
  """config.features: how features are extracted."""
  return ml_collections.ConfigDict(
    dict(
      # Encoder weights for extraction on first use: a pretraining workdir or checkpoint, or
      # "random" (fresh from config.seed: the control). The CLI's --init_from overrides it.
      init_from="",
      window_frames=-1,  # frames per window; -1: data.num_frames * data.frame_stride
      stride_frames=4,  # frames between window starts
      pooling="mean",  # a window's feature: mean of its N_t clip features, or "concat" them
      batch_size=32,  # windows per encoder call
    )
  )


def window_frames(config: ml_collections.ConfigDict) -> int:
  window = config.features.window_frames
  return config.data.num_frames * config.data.frame_stride if window == -1 else window


def feature_dim(config: ml_collections.ConfigDict) -> int:
  """D of one window's feature: the video width, times N_t when pooling is "concat"."""
  width = config.model.video.width
  if config.features.pooling == "concat":
    return width * configuration.num_temporal_positions(config)
  return width


def validate_features_config(config: ml_collections.ConfigDict) -> None:
  features = config.features
  window = window_frames(config)
  require(
    window >= config.data.num_frames and window % config.data.num_frames == 0,
    f"features.window_frames={window} must be a multiple of data.num_frames="
    f"{config.data.num_frames} (the encoder's frames are window / num_frames apart)",
  )
  require(features.stride_frames >= 1, f"features.stride_frames={features.stride_frames} < 1")
  require(features.batch_size >= 1, f"features.batch_size={features.batch_size} < 1")
  require(
    features.pooling in ("mean", "concat"),
    f"features.pooling={features.pooling!r}: use 'mean' or 'concat'",
  )


def window_encoder(config: ml_collections.ConfigDict) -> classifier.PooledVideoFeatures:
  model = config.model
  return classifier.PooledVideoFeatures(
    video={**model.video.to_dict(), "remat": "none", "scan_layers": model.scan_layers},
    pooling=config.features.pooling,
    dtype=jnp.dtype(model.dtype),
  )


def encoder_source(config: ml_collections.ConfigDict, init_from: str) -> dict:
  """What `encoder_params(config, init_from)` loads, without loading it: settings.json's
  "encoder" (the checkpoint's step directory and step, or "random" and the seed)."""
  if init_from == RANDOM:
    return {"init_from": RANDOM, "seed": config.seed}
  require(bool(init_from), "features.init_from is empty: give a pretraining workdir or 'random'")
  try:
    step_dir = checkpointing.resolve_step_dir(init_from)
  except FileNotFoundError as e:
    raise configuration.ConfigError(str(e)) from e
  return {"init_from": step_dir, "step": int(os.path.basename(step_dir.rstrip("/")))}


def encoder_params(config: ml_collections.ConfigDict, init_from: str) -> tuple[dict, dict]:
  """(params, source) of the window encoder: the video tower of the checkpoint `init_from`
  names (position tables resampled to config.data's clip), or fresh from config.seed when it
  is "random". `source` describes it for settings.json."""
  model = window_encoder(config)
  data = config.data
  dummy = jnp.zeros((1, data.num_frames, data.resolution, data.resolution, 3))
  fresh = jax.device_get(
    jax.jit(lambda: model.init(jax.random.PRNGKey(config.seed), dummy))()["params"]
  )
  fresh = jax.tree.map(np.asarray, nn.meta.unbox(fresh))
  if init_from == RANDOM:
    return fresh, encoder_source(config, init_from)
  encoder_source(config, init_from)  # a clear error for a path that holds no checkpoint
  source, meta = checkpointing.load_params(init_from)
  pt, ph, pw = config.model.video.patch_size
  grid = (data.num_frames // pt, data.resolution // ph, data.resolution // pw)
  params, report = param_mapping.map_params(
    source,
    fresh,
    {"video_encoder": "video_encoder"},
    source_grid=meta.get("video_grid"),
    target_grid=grid,
  )
  logging.info(
    "Encoder from %s (step %d):\n%s",
    meta["path"],
    meta["step"],
    param_mapping.format_report(report),
  )
  return params, {"init_from": meta["path"], "step": meta["step"]}  # = encoder_source


def feature_settings(config: ml_collections.ConfigDict, source: dict) -> dict:
  """What determines the features' values: settings.json, and the cache key."""
  data = config.data
  settings = dict(
    format=feature_store.FORMAT,
    encoder=source,
    video=config.model.video.to_dict(),
    dtype=config.model.dtype,
    num_frames=data.num_frames,
    resolution=data.resolution,
    normalization=data.normalization,
    window_frames=window_frames(config),
    stride_frames=config.features.stride_frames,
    pooling=config.features.pooling,
    batch_size=config.features.batch_size,
  )
  return json.loads(json.dumps(settings))  # as settings.json reads back (tuples -> lists)


def feature_source(config: ml_collections.ConfigDict, data_dir: str = "", splits=()):
  """(shard directory, splits) to extract: `data_dir` or config.data.path, else the config's
  ShapesWorld (built on first use); splits default to data.train_split and data.eval_split."""
  root = data_dir or config.data.path
  if root:
    root = paths.resolve(root)
    require(os.path.isdir(root), f"--data / data.path: {root} is not a directory of shards")
  else:
    root = data_setup.shapesworld_path(config)
    from data_pipelines.shapesworld import build as shapesworld_build

    shapesworld_build.build(root, config.data.shapesworld)  # a no-op once built
  splits = list(splits) or [config.data.train_split, config.data.eval_split]
  for split in splits:
    try:
      input_pipeline.list_shards(root, split)
    except FileNotFoundError:
      raise configuration.ConfigError(f"{root} has no {split!r} split to extract") from None
  return root, splits


def cached_feature_dir(config: ml_collections.ConfigDict) -> str:
  """The features temporal_localization trains on: temporal_localization.features, or, when
  that is empty, a cache directory keyed by the extraction settings, filled on first use from
  features.init_from (a later run with the same settings reuses it)."""
  given = config.temporal_localization.features
  if given:
    return paths.resolve(given)
  require(
    bool(config.features.init_from),
    "temporal_localization.features is empty and so is features.init_from: give the "
    "pretraining workdir to extract from (--config.features.init_from=W, or 'random'), or "
    "features extracted by `python -m svilm.extract_features` "
    "(--config.temporal_localization.features=DIR)",
  )
  root, splits = feature_source(config)
  settings = feature_settings(config, encoder_source(config, config.features.init_from))
  key = json.dumps({**settings, "data": root, "splits": splits}, sort_keys=True, default=str)
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  directory = os.path.join(os.path.expanduser(config.data.shapesworld_dir), "features", digest)
  if not os.path.exists(os.path.join(directory, feature_store.INDEX)):
    logging.info("Extracting features of %s into %s", root, directory)
    params, _ = encoder_params(config, config.features.init_from)
    extract(config, params, shard_dir=root, splits=splits, output=directory, settings=settings)
  return directory


def _label_names(shard_dir: str) -> list[str] | None:
  """Class names beside the shards: classes.txt (readers) or actions.txt (ShapesWorld)."""
  for name in ("classes.txt", "actions.txt"):
    path = os.path.join(shard_dir, name)
    if os.path.exists(path):
      with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]
  return None


def _decode(jpeg: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


class _Extractor:
  """The jitted encoder and the window loop for one config and parameter set."""

  def __init__(self, config, params):
    self.config, self.params = config, params
    self.model = window_encoder(config)
    self.batch = config.features.batch_size
    self.window = window_frames(config)
    self.stride = config.features.stride_frames
    self.step = self.window // config.data.num_frames  # frames between the encoder's frames
    self._apply = jax.jit(lambda p, x: self.model.apply({"params": p}, x))

  def clip(self, frames, start: int, cache: dict):
    """The window starting at `start` as the encoder's [num_frames, R, R, 3] float input."""
    data = self.config.data
    picks = [min(start + j * self.step, len(frames) - 1) for j in range(data.num_frames)]
    for index in picks:
      if index not in cache:
        cache[index] = _decode(frames[index])
    for index in [i for i in cache if i < start + self.stride]:
      if index not in picks:
        del cache[index]  # earlier than every later window: never needed again
    stack = tf.constant(np.stack([cache[i] for i in picks]))
    height, width = stack.shape[1], stack.shape[2]
    window = video_ops.center_crop_window(tf.constant(height), tf.constant(width))
    clip = video_ops.crop_and_resize(stack, window, data.resolution)
    return video_ops.normalize(clip, data.normalization).numpy()

  def video_features(self, frames) -> np.ndarray:
    """float32 [num_windows, D] of one video (frames: its JPEG bytes)."""
    starts = feature_store.window_starts(len(frames), self.window, self.stride)
    cache, rows = {}, []
    for begin in range(0, len(starts), self.batch):
      clips = [self.clip(frames, int(s), cache) for s in starts[begin : begin + self.batch]]
      real = len(clips)
      clips += [np.zeros_like(clips[0])] * (self.batch - real)
      out = self._apply(self.params, jnp.asarray(np.stack(clips)))
      rows.append(np.asarray(out)[:real])
    return np.concatenate(rows).astype(np.float32)


def _ground_truth(record: dict, names: list[str] | None, fps: float) -> list[dict]:
  """The record's timed action segments as ActivityNet annotations (identical ones once)."""
  seen, out = set(), []
  for start, end, action in zip(
    record["segment_start"], record["segment_end"], record["segment_action"]
  ):
    if action < 0:
      continue
    label = names[action] if names and action < len(names) else f"class_{action}"
    key = (int(start), int(end), label)
    if key not in seen:
      seen.add(key)
      out.append({"segment": [int(start) / fps, int(end) / fps], "label": label})
  return out


def extract(config, params, *, shard_dir: str, splits, output: str, settings: dict) -> dict:
  """Writes the feature directory `output` (module docstring); returns throughput figures."""
  os.makedirs(output, exist_ok=True)
  settings_path = os.path.join(output, feature_store.SETTINGS)
  if os.path.exists(settings_path):
    with open(settings_path) as f:
      previous = json.load(f)
    if previous != settings:
      changed = sorted(
        k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k)
      )
      raise ValueError(
        f"{output} holds features made with other settings ({', '.join(changed)} differ): "
        "give another --output, or delete it to start over"
      )
  else:
    feature_store.write_json_atomic(settings_path, settings)

  extractor = _Extractor(config, params)
  names = _label_names(shard_dir)
  # A reader's ground_truth.json beside the shards (data_pipelines/readers/activitynet.py)
  # keeps the release's times in seconds and every segment: use it where it has the video,
  # else rebuild the segments from the records' frame-rounded annotations (ShapesWorld).
  release = {}
  if os.path.exists(os.path.join(shard_dir, feature_store.GROUND_TRUTH)):
    release = feature_store.read_ground_truth(shard_dir)
  videos, database = {}, {}
  stats = dict(videos=0, resumed=0, windows=0, seconds_of_video=0.0, compute_seconds=0.0)
  for split in splits:
    for shard in input_pipeline.list_shards(shard_dir, split):
      for serialized in tf.data.TFRecordDataset(shard):
        parsed = schema.parse_sequence_example(serialized, with_annotations=False)
        video_id = parsed["video_id"].numpy().decode()
        if video_id in videos:
          raise ValueError(f"video id {video_id!r} occurs twice in {shard_dir}")
        fps = float(parsed["fps"].numpy())
        frames = parsed["frames"].numpy()
        relative = feature_store.video_file(split, video_id)
        path = os.path.join(output, relative)
        starts = feature_store.window_starts(len(frames), extractor.window, extractor.stride)
        if os.path.exists(path):
          stats["resumed"] += 1
        else:
          began = time.perf_counter()
          features = extractor.video_features(frames)
          feature_store.write_npy_atomic(path, features)
          stats["compute_seconds"] += time.perf_counter() - began
          stats["videos"] += 1
          stats["windows"] += len(starts)
          stats["seconds_of_video"] += len(frames) / fps
        ends = np.minimum(starts + extractor.window, len(frames))
        videos[video_id] = dict(
          split=split,
          file=relative,
          fps=fps,
          num_frames=len(frames),
          duration=len(frames) / fps,
          windows=[[s / fps, e / fps] for s, e in zip(starts.tolist(), ends.tolist())],
        )
        record = {
          k: parsed[k].numpy().tolist() for k in ("segment_start", "segment_end", "segment_action")
        }
        database[video_id] = dict(
          subset=feature_store.subset_of(split),
          duration=len(frames) / fps,
          annotations=release[video_id]["annotations"]
          if video_id in release
          else _ground_truth(record, names, fps),
        )
      logging.info("%s: %d videos so far (%d resumed)", shard, len(videos), stats["resumed"])
  dim = feature_dim(config)
  feature_store.write_json_atomic(
    os.path.join(output, feature_store.GROUND_TRUTH),
    {"version": feature_store.FORMAT, "database": database},
  )
  feature_store.write_json_atomic(
    os.path.join(output, feature_store.INDEX),
    dict(format=feature_store.FORMAT, feature_dim=dim, classes=names or [], videos=videos),
  )
  return stats
