"""S-ViLM dual encoder: video and text towers projected into one joint space.

No fusion: the video tower (`VideoEncoder`) and the text tower
(`TextEncoder`) run independently and meet only in the losses. This module
adds the three projections (clip features, group tokens, text) and the
learnable logit scale, and exposes `encode_video` / `encode_text` so
evaluators can embed one modality at a time with
`model.apply(variables, ..., method=SViLM.encode_video)`.

All embeddings are returned in float32 whatever the compute dtype, because
the contrastive losses compare them across the global batch.

Each tower takes `remat` and `scan_layers` through its mapping (e.g.
video=dict(..., remat='full', scan_layers=True)). A scanned tower stores its
blocks in a different param layout (see the tower modules);
`convert_layer_layout` moves a checkpoint's params to the layout a model
expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from svilm.models import layers
from svilm.models import text_encoder
from svilm.models import video_encoder

Array = Any
Dtype = Any

# CLIP clips exp(log_logit_scale) at 100 to keep training stable.
MAX_LOGIT_SCALE = 100.0


def pool_video_embedding(clip_emb: Array, weights: Array | None = None, eps: float = 1e-6) -> Array:
  """Video embedding from per-position clip embeddings.

  v_b = layers.l2_normalize(sum_k w[b,k] clip_emb[b,k] / max(sum_k w[b,k], eps)).

  Args:
    clip_emb: [B, N_t, E] projected, unnormalised clip embeddings.
    weights: [B, N_t] non-negative weights (e.g. the cut-and-paste
      foreground mask), or None for a plain mean over all positions.
    eps: guards the division by the total weight; an all-zero weight row gives
      a zero vector.

  Returns:
    [B, E] L2-normalised embeddings (float32).
  """
  clip_emb = clip_emb.astype(jnp.float32)
  if weights is None:
    weights = jnp.ones(clip_emb.shape[:2], jnp.float32)
  weights = weights.astype(jnp.float32)
  total = jnp.sum(weights, axis=1, keepdims=True)  # [B, 1]
  pooled = jnp.einsum("bk,bke->be", weights, clip_emb)
  pooled = pooled / jnp.maximum(total, eps)
  return layers.l2_normalize(pooled)


def _projection(embed_dim: int, dtype: Dtype, name: str) -> nn.Dense:
  # No bias, as in CLIP: a bias would shift every embedding by the same
  # vector and only fight the L2 normalisation.
  return layers.dense(embed_dim, ("embed", None), dtype, name=name, use_bias=False)


def convert_layer_layout(params: Mapping[str, Any], model: SViLM) -> dict[str, Any]:
  """SViLM params (either layout per tower) in the layout `model` expects.

  Args:
    params: the 'params' collection of an SViLM (with 'video_encoder' and
      'text_encoder' entries), boxed or plain.
    model: the (unbound) SViLM the params are for; its `video` / `text`
      mappings say whether each tower is scanned, and its depth and
      grouping layers.

  Returns:
    A params dict of plain arrays: each tower's blocks stacked (see
    `video_encoder.stack_block_params`, `text_encoder.stack_layer_params`)
    where the model scans that tower and params do not yet, unstacked in the
    opposite case, otherwise unchanged.
  """
  params = dict(nn.meta.unbox(params))
  # parent=None: plain config objects, never bound to a scope.
  video = video_encoder.VideoEncoder(**dict(model.video), parent=None)
  text = text_encoder.TextEncoder(**dict(model.text), parent=None)
  towers = {
    "video_encoder": (
      video.scan_layers,
      video_encoder.block_segments(video.depth, video.grouping_layers),
    ),
    "text_encoder": (text.scan_layers, text_encoder.layer_segments(text.depth)),
  }
  for key, (scanned, segments) in towers.items():
    is_scanned = next(iter(segments)) in params[key]
    if scanned and not is_scanned:
      params[key] = layers.stack_params(params[key], segments)
    elif not scanned and is_scanned:
      params[key] = layers.unstack_params(params[key], segments)
  return params


class SViLM(nn.Module):
  """The S-ViLM dual encoder.

  Attributes:
    video: keyword arguments of VideoEncoder (e.g. a ConfigDict).
    text: keyword arguments of TextEncoder.
    embed_dim: joint-space width E (256 is unconfirmed in the paper).
    temperature_init: initial softmax temperature tau; logit scale = 1/tau.
    learn_temperature: learn log(1/tau) (param 'log_logit_scale') or keep it
      fixed at log(1/temperature_init).
    text_one_call: encode captions and prompted nouns in one text-tower call
      (`encode_captions_and_nouns`), or in two. The same outputs (to float
      rounding; exactly the same function without dropout). One call runs
      fewer, larger matmuls but pads the nouns to the caption length, so it
      computes more (11% slower steps on a 2-core CPU; docs/benchmarks.md).
    dtype: compute dtype of both towers unless the mappings set their own
      'dtype'; params are float32.
  """

  video: Mapping[str, Any] = flax.core.FrozenDict()
  text: Mapping[str, Any] = flax.core.FrozenDict()
  embed_dim: int = 256
  temperature_init: float = 0.07
  learn_temperature: bool = True
  text_one_call: bool = False
  dtype: Dtype = jnp.float32

  def setup(self):
    self.video_encoder = video_encoder.VideoEncoder(**{"dtype": self.dtype, **dict(self.video)})
    self.text_encoder = text_encoder.TextEncoder(**{"dtype": self.dtype, **dict(self.text)})
    self.video_proj = _projection(self.embed_dim, self.dtype, "video_proj")
    self.group_proj = _projection(self.embed_dim, self.dtype, "group_proj")
    self.text_proj = _projection(self.embed_dim, self.dtype, "text_proj")
    init_value = float(np.log(1.0 / self.temperature_init))
    if self.learn_temperature:
      self.log_logit_scale = self.param(
        "log_logit_scale",
        nn.with_logical_partitioning(nn.initializers.constant(init_value), ()),
        (),
      )
    else:
      self.log_logit_scale = jnp.asarray(init_value, jnp.float32)

  def encode_video(self, video: Array, *, train: bool) -> tuple[dict[str, Array], dict[str, Any]]:
    """Embeds a video [B, T, H, W, 3].

    Returns:
      outputs: 'clip_emb' [B, N_t, E], projected clip features, NOT
        normalised (pool with `pool_video_embedding`); 'group_emb' [B, M, E],
        projected and L2-normalised group tokens.
      intermediates: the VideoEncoder's intermediates plus 'clip_emb' and
        'tokens' (final video tokens [B, N_t, H_p, W_p, D]).
    """
    tokens, inter = self.video_encoder(video, train=train)
    clip_emb = self.video_proj(inter["clip_features"]).astype(jnp.float32)
    group_emb = layers.l2_normalize(self.group_proj(inter["group_tokens"]).astype(jnp.float32))
    outputs = {"clip_emb": clip_emb, "group_emb": group_emb}
    return outputs, {**inter, "clip_emb": clip_emb, "tokens": tokens}

  def encode_text(
    self, tokens: Array, mask: Array, *, train: bool
  ) -> tuple[Array, dict[str, Array]]:
    """Embeds token ids [..., L] (mask [..., L]) to [..., E], L2-normalised.

    Intermediates: {'tokens': [..., L, D_text]} final hidden states and
    'pooled' [..., D_text] (the [CLS] state before projection).
    """
    pooled, inter = self.text_encoder(tokens, mask, train=train)
    emb = layers.l2_normalize(self.text_proj(pooled).astype(jnp.float32))
    return emb, {**inter, "pooled": pooled}

  def logit_scale(self) -> Array:
    """exp(log_logit_scale) clipped to at most 100, float32 scalar."""
    return jnp.minimum(jnp.exp(self.log_logit_scale), MAX_LOGIT_SCALE)

  def __call__(
    self,
    video: Array,
    text_tokens: Array,
    text_mask: Array,
    noun_tokens: Array,
    noun_mask: Array,
    *,
    train: bool,
  ) -> tuple[dict[str, Array], dict[str, Any]]:
    """Runs both towers on a batch.

    Args:
      video: [B, T, H, W, 3].
      text_tokens, text_mask: captions [B, L].
      noun_tokens, noun_mask: prompted noun phrases [B, K, Ln]; a padded noun
        slot (all-zero mask) gives a finite embedding the loss must mask.
      train: dropout ('dropout' rng) and Gumbel noise ('gumbel' rng).

    Returns:
      outputs: encode_video's outputs plus 'text_emb' [B, E], 'noun_emb'
        [B, K, E] (both L2-normalised) and 'logit_scale' (scalar).
      intermediates: encode_video's intermediates plus 'text_tokens'
        [B, L, D_text] and 'noun_tokens' [B, K, Ln, D_text].
    """
    outputs, inter = self.encode_video(video, train=train)
    if self.text_one_call:
      (text_emb, text_states), (noun_emb, noun_states) = self.encode_captions_and_nouns(
        text_tokens, text_mask, noun_tokens, noun_mask, train=train
      )
    else:
      text_emb, text_inter = self.encode_text(text_tokens, text_mask, train=train)
      noun_emb, noun_inter = self.encode_text(noun_tokens, noun_mask, train=train)
      text_states, noun_states = text_inter["tokens"], noun_inter["tokens"]
    outputs = {
      **outputs,
      "text_emb": text_emb,
      "noun_emb": noun_emb,
      "logit_scale": self.logit_scale(),
    }
    inter = {**inter, "text_tokens": text_states, "noun_tokens": noun_states}
    return outputs, inter

  def encode_captions_and_nouns(
    self, text_tokens: Array, text_mask: Array, noun_tokens: Array, noun_mask: Array, *, train: bool
  ) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """Captions [B, L] and nouns [B, K, Ln] through one text-tower call: ((text_emb [B, E],
    text states [B, L, D]), (noun_emb [B, K, E], noun states [B, K, Ln, D])).

    Each example's caption and its K nouns are padded to max(L, Ln) (padded keys are masked,
    so nothing changes) and stacked as 1 + K consecutive rows, [B * (1 + K), max(L, Ln)]: the
    rows of one example stay together, so a batch sharded over devices stays where it is.
    """
    (batch, length), (_, k, noun_length) = text_tokens.shape, noun_tokens.shape
    width = max(length, noun_length)

    def rows(x, n):  # [B, R, n] -> [B, R, width], zeros after n
      return jnp.pad(x, [(0, 0), (0, 0), (0, width - n)])

    tokens = jnp.concatenate(
      [rows(text_tokens[:, None], length), rows(noun_tokens, noun_length)], 1
    )
    mask = jnp.concatenate([rows(text_mask[:, None], length), rows(noun_mask, noun_length)], 1)
    emb, inter = self.encode_text(
      tokens.reshape(batch * (1 + k), width), mask.reshape(batch * (1 + k), width), train=train
    )
    emb = emb.reshape(batch, 1 + k, -1)
    states = inter["tokens"].reshape(batch, 1 + k, width, -1)
    return (emb[:, 0], states[:, 0, :length]), (emb[:, 1:], states[:, 1:, :noun_length])
