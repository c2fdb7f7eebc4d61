"""Config checks and derived values: the one place both happen, before anything compiles.

`finalize(config, ...)` fills values derived from other facts (the tokenizer's vocabulary, the
number of temporal positions) and rejects impossible combinations with a message that names the
key, so a wrong setting fails in a second at start-up instead of after compilation or data
loading. Unknown keys are already rejected by the locked ConfigDict (see svilm/main.py).
"""

from __future__ import annotations

import ml_collections

from data_pipelines import video_ops
from svilm import sharding
from svilm.models import vit

# Compute dtypes (parameters and optimizer state stay float32 under either).
COMPUTE_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def num_temporal_positions(config: ml_collections.ConfigDict) -> int:
  """N_t: temporal token positions of a clip (frames / tubelet temporal size)."""
  return config.data.num_frames // config.model.video.patch_size[0]


def finalize(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int,
             vocab_size: int | None) -> ml_collections.ConfigDict:
  """Validates `config` and returns a copy with derived values filled in (and locked).

  With vocab_size=None (before the tokenizer is known) the vocabulary checks are skipped, so
  the trainer can reject a bad config before it builds or reads any data.
  """
  config = ml_collections.ConfigDict(config.to_dict())   # never mutate the caller's config
  data, video, text = config.data, config.model.video, config.model.text

  _require(config.total_steps > 0, f"total_steps must be > 0, got {config.total_steps}")
  _require(config.batch_size > 0, f"batch_size must be > 0, got {config.batch_size}")
  for key in ("log_every_steps", "checkpoint_every_steps"):
    _require(config[key] > 0, f"{key} must be > 0, got {config[key]}")
  _require(config.eval_every_steps >= 0, "eval_every_steps must be >= 0 (0: only at the end)")
  _require(config.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")

  try:
    mesh = sharding.mesh_shape(config, num_devices)
    sharding.check_mesh_fits_hosts(mesh, num_devices, process_count)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  shards = mesh[0] * mesh[1]   # the batch is split over data x fsdp
  accum = config.optim.grad_accum_steps
  _require(accum >= 1, f"optim.grad_accum_steps must be >= 1, got {accum}")
  micro = f"optim.grad_accum_steps={accum} micro-batches x " if accum > 1 else ""
  _require(config.batch_size % (shards * accum) == 0,
           f"batch_size={config.batch_size} is not divisible by {micro}the {shards} batch "
           "shards (mesh.data x mesh.fsdp)")
  _require(config.batch_size % process_count == 0,
           f"batch_size={config.batch_size} is not divisible by {process_count} hosts")
  _require(config.eval.batch_size % shards == 0 and config.eval.batch_size % process_count == 0,
           f"eval.batch_size={config.eval.batch_size} is not divisible by the {shards} batch "
           f"shards (mesh.data x mesh.fsdp) and the {process_count} hosts")
  _require(data.host_split in ("files", "stream"),
           f"data.host_split must be 'files' or 'stream', got {data.host_split!r}")
  model = config.model
  _require(model.dtype in COMPUTE_DTYPES,
           f"model.dtype={model.dtype!r} is not one of {sorted(COMPUTE_DTYPES)}")
  _require(model.remat in vit.REMAT_POLICIES,
           f"model.remat={model.remat!r} is not one of {sorted(vit.REMAT_POLICIES)}")
  _require(config.batch_size // accum >= 2,
           f"batch_size / optim.grad_accum_steps = {config.batch_size // accum} must be >= 2: "
           "contrastive negatives and cut-and-paste backgrounds come from the micro-batch")

  pt, ph, pw = video.patch_size
  _require(data.num_frames % pt == 0,
           f"data.num_frames={data.num_frames} is not divisible by the tubelet's temporal size "
           f"model.video.patch_size[0]={pt}")
  _require(data.resolution % ph == 0 and data.resolution % pw == 0,
           f"data.resolution={data.resolution} is not divisible by the patch size "
           f"model.video.patch_size[1:]={(ph, pw)}")
  _require(data.frame_stride >= 1, f"data.frame_stride must be >= 1, got {data.frame_stride}")
  low, high = data.train_crop_area
  _require(0.0 < low <= high <= 1.0,
           f"data.train_crop_area={tuple(data.train_crop_area)} must satisfy 0 < min <= max <= 1")
  low, high = data.train_crop_aspect_ratio
  _require(0.0 < low <= high, f"data.train_crop_aspect_ratio="
           f"{tuple(data.train_crop_aspect_ratio)} must satisfy 0 < min <= max")
  _require(data.normalization in video_ops.NORMALIZATIONS,
           f"data.normalization={data.normalization!r} is not one of {video_ops.NORMALIZATIONS}")
  layers = tuple(video.grouping_layers)
  _require(len(layers) >= 1 and len(set(layers)) == len(layers)
           and all(1 <= layer <= video.depth for layer in layers),
           f"model.video.grouping_layers={layers} must be distinct layer numbers in "
           f"[1, model.video.depth={video.depth}]")
  _require(video.width % video.num_heads == 0 and text.width % text.num_heads == 0,
           "model.video.width / model.text.width must be divisible by their num_heads")
  _require("{}" in data.noun_prompt,
           f"data.noun_prompt={data.noun_prompt!r} must contain '{{}}' for the noun")
  _require(config.loss.video_pooling in ("foreground", "all"),
           f"loss.video_pooling must be 'foreground' or 'all', got {config.loss.video_pooling!r}")
  _require(config.loss.temporal_kind in ("mse", "bce"),
           f"loss.temporal_kind must be 'mse' or 'bce', got {config.loss.temporal_kind!r}")

  positions = num_temporal_positions(config)
  cut = config.cut_and_paste
  if cut.max_span == -1:
    cut.max_span = positions - 1
  if cut.enabled:
    _require(positions >= 2, f"cut_and_paste needs >= 2 temporal positions, the clip has "
             f"{positions} (data.num_frames / model.video.patch_size[0])")
    _require(1 <= cut.min_span <= cut.max_span <= positions - 1,
             f"cut_and_paste.min_span={cut.min_span} / max_span={cut.max_span} must satisfy "
             f"1 <= min_span <= max_span <= {positions - 1} (temporal positions - 1, so at "
             "least one background position remains)")
  elif config.loss.temporal_weight:
    raise ConfigError("loss.temporal_weight > 0 needs cut_and_paste.enabled=True (the "
                      "temporal grouping loss is defined on cut-and-paste clips)")

  if vocab_size is None:
    config.lock()
    return config
  if text.vocab_size == -1:
    text.vocab_size = vocab_size
  _require(text.vocab_size >= vocab_size,
           f"model.text.vocab_size={text.vocab_size} is smaller than the tokenizer's "
           f"{vocab_size} pieces")
  if text.max_len == -1:
    text.max_len = max(data.max_text_len, data.max_noun_len)
  _require(text.max_len >= max(data.max_text_len, data.max_noun_len),
           f"model.text.max_len={text.max_len} is shorter than data.max_text_len / "
           "data.max_noun_len")
  config.lock()
  return config
