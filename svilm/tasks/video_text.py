"""What every task on the S-ViLM dual encoder shares: model config checks, the model, inputs.

Pretraining and retrieval (and the downstream tasks that reuse the towers) read video clips and
text through the same shards, tokenizer and clip settings (`config.data`) and build the same
`svilm.models.svilm.SViLM` from `config.model`; the checks of those keys live here once.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from data_pipelines import video_ops
from svilm import configuration
from svilm.models import svilm as svilm_model
from svilm.tasks import base

require = configuration.require


def validate_video_text_config(config: ml_collections.ConfigDict, vocab_size: int | None) -> None:
  """Checks config.data's clip settings and config.model's towers; fills the vocabulary size
  and the text length when they are -1 (needs vocab_size; skipped while it is None)."""
  data, video, text = config.data, config.model.video, config.model.text
  require(
    data.host_split in ("files", "stream"),
    f"data.host_split must be 'files' or 'stream', got {data.host_split!r}",
  )
  pt, ph, pw = video.patch_size
  require(
    data.num_frames % pt == 0,
    f"data.num_frames={data.num_frames} is not divisible by the tubelet's temporal size "
    f"model.video.patch_size[0]={pt}",
  )
  require(
    data.resolution % ph == 0 and data.resolution % pw == 0,
    f"data.resolution={data.resolution} is not divisible by the patch size "
    f"model.video.patch_size[1:]={(ph, pw)}",
  )
  require(data.frame_stride >= 1, f"data.frame_stride must be >= 1, got {data.frame_stride}")
  low, high = data.train_crop_area
  require(
    0.0 < low <= high <= 1.0,
    f"data.train_crop_area={tuple(data.train_crop_area)} must satisfy 0 < min <= max <= 1",
  )
  low, high = data.train_crop_aspect_ratio
  require(
    0.0 < low <= high,
    f"data.train_crop_aspect_ratio="
    f"{tuple(data.train_crop_aspect_ratio)} must satisfy 0 < min <= max",
  )
  require(
    data.normalization in video_ops.NORMALIZATIONS,
    f"data.normalization={data.normalization!r} is not one of {video_ops.NORMALIZATIONS}",
  )
  layers = tuple(video.grouping_layers)
  require(
    len(layers) >= 1
    and len(set(layers)) == len(layers)
    and all(1 <= layer <= video.depth for layer in layers),
    f"model.video.grouping_layers={layers} must be distinct layer numbers in "
    f"[1, model.video.depth={video.depth}]",
  )
  require(
    video.width % video.num_heads == 0 and text.width % text.num_heads == 0,
    "model.video.width / model.text.width must be divisible by their num_heads",
  )
  if vocab_size is None:
    return
  if text.vocab_size == -1:
    text.vocab_size = vocab_size
  require(
    text.vocab_size >= vocab_size,
    f"model.text.vocab_size={text.vocab_size} is smaller than the tokenizer's {vocab_size} pieces",
  )
  if text.max_len == -1:
    text.max_len = max(data.max_text_len, data.max_noun_len)
  require(
    text.max_len >= max(data.max_text_len, data.max_noun_len),
    f"model.text.max_len={text.max_len} is shorter than data.max_text_len / data.max_noun_len",
  )


def require_contrastive_batch(config: ml_collections.ConfigDict) -> None:
  """Contrastive negatives (and cut-and-paste backgrounds) come from the micro-batch."""
  accum = config.optim.grad_accum_steps
  require(
    config.batch_size // accum >= 2,
    f"batch_size / optim.grad_accum_steps = {config.batch_size // accum} must be >= 2: "
    "contrastive negatives and cut-and-paste backgrounds come from the micro-batch",
  )


def video_grid(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(N_t, H_p, W_p): the video tower's tubelet grid for config.data's clips."""
  pt, ph, pw = config.model.video.patch_size
  return (config.data.num_frames // pt, config.data.resolution // ph, config.data.resolution // pw)


def build_model(config: ml_collections.ConfigDict) -> svilm_model.SViLM:
  """The SViLM module of `config.model` (compute dtype, remat and scan apply to both towers)."""
  model = config.model
  scaling = dict(remat=model.remat, scan_layers=model.scan_layers)
  return svilm_model.SViLM(
    video={**model.video.to_dict(), **scaling},
    text={**model.text.to_dict(), **scaling},
    embed_dim=model.embed_dim,
    temperature_init=model.temperature_init,
    learn_temperature=model.learn_temperature,
    text_one_call=model.text_one_call,
    dtype=jnp.dtype(model.dtype),
  )


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict:
  """Zeros shaped like a training batch of clips, captions and prompted nouns (the contract of
  data_pipelines/input_pipeline.py), for init and tracing."""
  data = config.data
  return {
    "video": jnp.zeros((batch_size, data.num_frames, data.resolution, data.resolution, 3)),
    "text_tokens": jnp.zeros((batch_size, data.max_text_len), jnp.int32),
    "text_mask": jnp.ones((batch_size, data.max_text_len), jnp.int32),
    "noun_tokens": jnp.zeros((batch_size, data.num_nouns, data.max_noun_len), jnp.int32),
    "noun_mask": jnp.ones((batch_size, data.num_nouns, data.max_noun_len), jnp.int32),
    "noun_valid": jnp.ones((batch_size, data.num_nouns), jnp.int32),
  }


def init_variables(model: svilm_model.SViLM, rngs: dict, batch: dict) -> dict:
  """model.init through the full dual encoder (both towers, nouns included)."""
  return model.init(
    rngs,
    batch["video"],
    batch["text_tokens"],
    batch["text_mask"],
    batch["noun_tokens"],
    batch["noun_mask"],
    train=False,
  )


class VideoTextTask(base.Task):
  """A task on the S-ViLM dual encoder of config.model, reading clips per config.data."""

  # init_from continues the whole dual encoder: towers, projections, temperature.
  init_from_map = {"": ""}

  def validate_config(self, config, vocab_size):
    validate_video_text_config(config, vocab_size)
    require_contrastive_batch(config)

  def build_model(self, config):
    return build_model(config)

  def video_grid(self, config):
    return video_grid(config)
