"""Video ViT pieces: tubelet embedding, space-time position embeddings, the pre-LN block.

These are what the S-ViLM video encoder (`video_encoder.py`) stacks; the
layers both encoders share (dense, LayerNorm, GELU, attention, MLP, and the
remat / scan-over-layers machinery) are in `layers.py`. Parameters carry
logical axis names as described there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from svilm.models import layers

Array = Any

Dtype = Any


def tubelet_grid(video_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, int, int]:
  """Token grid (N_t, H_p, W_p) = (T/p_t, H/p_h, W/p_w) of a [B,T,H,W,C] video.

  Raises:
    ValueError: if T, H or W is not divisible by its patch size.
  """
  if len(video_shape) != 5:
    raise ValueError(f"Expected a video [B, T, H, W, C], got shape {tuple(video_shape)}.")
  sizes = tuple(video_shape[1:4])
  for axis, size, patch in zip("THW", sizes, patch_size):
    if size % patch:
      raise ValueError(
        f"Video {axis}={size} is not divisible by the tubelet size {patch} "
        f"(video shape {tuple(video_shape)}, patch_size "
        f"{tuple(patch_size)})."
      )
  return tuple(s // p for s, p in zip(sizes, patch_size))


class TubeletEmbedding(nn.Module):
  """Non-overlapping 3D patches: a Conv3D with stride = kernel = patch_size.

  Maps video [B, T, H, W, C] to tokens [B, T/p_t, H/p_h, W/p_w, width]. The parameters are
  those of `nn.Conv` ('conv/kernel' [p_t, p_h, p_w, C, width], 'conv/bias' [width]), with
  the same initialisation, but the computation is a patchify reshape and one matmul, the
  same function: XLA:CPU's convolution backward pass took 35 ms against 10 ms for the matmul
  on the default config's batch (docs/benchmarks.md).
  """

  width: int
  patch_size: tuple[int, int, int] = (2, 16, 16)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, video: Array) -> Array:
    return _PatchDense(self.width, tuple(self.patch_size), self.dtype, name="conv")(video)


class _PatchDense(nn.Module):
  """`TubeletEmbedding`'s computation under the parameter scope nn.Conv would use."""

  width: int
  patch_size: tuple[int, int, int]
  dtype: Dtype

  @nn.compact
  def __call__(self, video: Array) -> Array:
    n_t, n_h, n_w = tubelet_grid(video.shape, self.patch_size)  # Raises on bad sizes.
    (p_t, p_h, p_w), channels = self.patch_size, video.shape[-1]
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, None, None, None, "embed")
      ),
      (p_t, p_h, p_w, channels, self.width),
      jnp.float32,
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      (self.width,),
      jnp.float32,
    )
    video, kernel, bias = nn.dtypes.promote_dtype(video, kernel, bias, dtype=self.dtype)
    patches = video.reshape(video.shape[0], n_t, p_t, n_h, p_h, n_w, p_w, channels)
    patches = patches.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(
      video.shape[0], n_t, n_h, n_w, p_t * p_h * p_w * channels
    )
    return patches @ kernel.reshape(-1, self.width) + bias


class SpaceTimePositionEmbedding(nn.Module):
  """Adds learned space-time position embeddings to tokens [B, N_t, H_p, W_p, D].

  kind='joint': one table [N_t*H_p*W_p, D] (param 'joint').
  kind='factorised': temporal [N_t, D] ('temporal') + spatial [H_p*W_p, D]
  ('spatial'), broadcast-added. Which of the two the paper uses is
  unconfirmed in the paper; 'joint' is the default.
  The tables are sized by the grid seen at init, so a different input
  resolution needs resampled tables.
  """

  kind: str = "joint"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    _, n_t, h_p, w_p, d = x.shape
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed"))
    if self.kind == "joint":
      pos = self.param("joint", init, (n_t * h_p * w_p, d))
      pos = pos.reshape(n_t, h_p, w_p, d)
    elif self.kind == "factorised":
      temporal = self.param("temporal", init, (n_t, d))
      spatial = self.param("spatial", init, (h_p * w_p, d))
      pos = temporal[:, None, None, :] + spatial.reshape(1, h_p, w_p, d)
    else:
      raise ValueError(f"pos_embedding must be 'joint' or 'factorised', got {self.kind!r}.")
    return x + pos.astype(self.dtype)[None]


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

  Input and output are [B, L, D]. `mask` is an optional boolean attention
  mask broadcastable to [B, heads, L, L] (see `layers.padding_to_attention_mask`).
  """

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  query_chunk: int = 0  # layers.SelfAttention's: > 0 bounds the attention's memory

  @nn.compact
  def __call__(self, x: Array, mask: Array | None = None, *, train: bool) -> Array:
    y = layers.layer_norm(self.dtype, name="ln_attn")(x)
    y = layers.SelfAttention(
      self.num_heads, self.dropout, self.dtype, query_chunk=self.query_chunk, name="attention"
    )(y, mask, train=train)
    x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
    y = layers.layer_norm(self.dtype, name="ln_mlp")(x)
    return x + layers.MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, train=train)
