"""S-ViLM video encoder: tubelet ViT with a side stream of grouped tokens.

Video [B, T, H, W, 3] -> tubelets -> learned space-time positions -> `depth`
pre-LN transformer blocks over all N = N_t*H_p*W_p tokens. M learnable group
tokens never enter the transformer: after each layer listed in
`grouping_layers` a `GroupingBlock` reads the current video tokens and
updates the group tokens. Video tokens are not merged and go through every
layer, so per-position clip features for the temporal grouping loss and the
group tokens for spatial grounding come out of the same pass.
"""

from __future__ import annotations

from collections.abc import Sequence
import numbers
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from svilm.models import grouping
from svilm.models import vit

Array = Any
Dtype = Any


def default_grouping_layers(depth: int) -> tuple[int, ...]:
  """(depth/2, 3*depth/4, depth), floored and deduplicated; (6, 9, 12) at 12.

  The paper groups after layers 6, 9 and 12 of a 12-layer ViT; this scales
  the same fractions to other depths.
  """
  return tuple(sorted({max(1, depth // 2), max(1, (3 * depth) // 4), depth}))


def validate_grouping_layers(layers: Sequence[int], depth: int) -> None:
  """Raises ValueError unless `layers` are distinct ints in [1, depth]."""
  layers = tuple(layers)
  if not layers:
    raise ValueError('grouping_layers must name at least one layer.')
  if len(set(layers)) != len(layers):
    raise ValueError(f'grouping_layers must be distinct, got {layers}.')
  bad = [l for l in layers
         if not isinstance(l, numbers.Integral) or not 1 <= l <= depth]
  if bad:
    raise ValueError(f'grouping_layers are 1-based layer indices in '
                     f'[1, depth={depth}]; got {layers} (bad: {bad}).')


class VideoEncoder(nn.Module):
  """Tubelet ViT plus GroupViT grouping blocks on a group-token side stream.

  Defaults are the paper's ViT-B scale. Unconfirmed in the paper: the
  tubelet size (2, 16, 16), width 768, the position-embedding kind
  ('joint') and the placement rule for depths other than 12.

  Attributes:
    patch_size: tubelet (p_t, p_h, p_w); T, H, W must be divisible by it.
    width: token width D.
    depth: number of transformer blocks.
    num_heads: attention heads.
    mlp_dim: MLP hidden width (also used in the grouping blocks).
    dropout: dropout rate in attention and MLPs.
    pos_embedding: 'joint' or 'factorised' (see SpaceTimePositionEmbedding).
    num_groups: M, the number of group tokens.
    grouping_layers: 1-based layer indices after which a grouping block
      runs; None means `default_grouping_layers(depth)`.
    hard_assignment: straight-through hard assignment (else soft).
    gumbel_noise: Gumbel noise on the assignment logits in training.
    gumbel_temperature: temperature of the noisy assignment softmax.
    dtype: compute dtype; params are float32.
  """
  patch_size: tuple[int, int, int] = (2, 16, 16)
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout: float = 0.0
  pos_embedding: str = 'joint'
  num_groups: int = 32
  grouping_layers: tuple[int, ...] | None = None
  hard_assignment: bool = True
  gumbel_noise: bool = True
  gumbel_temperature: float = 1.0
  dtype: Dtype = jnp.float32

  def grid_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
    """(N_t, H_p, W_p) for a video of shape [B, T, H, W, C]; works unbound."""
    return vit.tubelet_grid(video_shape, self.patch_size)

  def resolved_grouping_layers(self) -> tuple[int, ...]:
    """The validated grouping layers (default filled in)."""
    layers = self.grouping_layers
    if layers is None:
      layers = default_grouping_layers(self.depth)
    layers = tuple(layers)
    validate_grouping_layers(layers, self.depth)
    return layers

  @nn.compact
  def __call__(self, video: Array, *,
               train: bool) -> tuple[Array, dict[str, Any]]:
    """Encodes a video.

    Args:
      video: [B, T, H, W, 3] float pixels.
      train: enables dropout ('dropout' rng) and Gumbel noise ('gumbel' rng).

    Returns:
      tokens: final LayerNormed video tokens [B, N_t, H_p, W_p, D].
      intermediates: dict with
        'clip_features' [B, N_t, D]: mean over the H_p*W_p spatial tokens of
          each temporal position of the final tokens (z^k in the paper);
        'group_tokens' [B, M, D]: final group tokens, LayerNormed;
        'soft_assignments', 'assignments': tuples with one [B, N, M] array
          per grouping block in layer order (see GroupingBlock); token order
          is t-major, then h, then w (N = N_t*H_p*W_p).
    """
    layers = self.resolved_grouping_layers()
    n_t, h_p, w_p = self.grid_shape(video.shape)
    batch = video.shape[0]

    x = vit.TubeletEmbedding(self.width, self.patch_size, self.dtype,
                             name='embedding')(video.astype(self.dtype))
    x = vit.SpaceTimePositionEmbedding(self.pos_embedding, self.dtype,
                                       name='pos_embedding')(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = x.reshape(batch, n_t * h_p * w_p, self.width)

    group_init = nn.with_logical_partitioning(
        nn.initializers.truncated_normal(stddev=0.02), ('groups', 'embed'))
    groups = self.param('group_tokens', group_init,
                        (self.num_groups, self.width))
    groups = jnp.broadcast_to(groups.astype(self.dtype)[None],
                              (batch, self.num_groups, self.width))

    soft_assignments, assignments = [], []
    for i in range(1, self.depth + 1):
      x = vit.EncoderBlock(self.num_heads, self.mlp_dim, self.dropout,
                           self.dtype, name=f'block_{i}')(x, train=train)
      if i in layers:
        groups, info = grouping.GroupingBlock(
            mlp_dim=self.mlp_dim, hard=self.hard_assignment,
            gumbel=self.gumbel_noise,
            gumbel_temperature=self.gumbel_temperature,
            dropout=self.dropout, dtype=self.dtype,
            name=f'grouping_{i}')(groups, x, train=train)
        soft_assignments.append(info['soft_assignment'])
        assignments.append(info['assignment'])

    x = vit.layer_norm(self.dtype, name='encoder_norm')(x)
    groups = vit.layer_norm(self.dtype, name='group_norm')(groups)
    tokens = x.reshape(batch, n_t, h_p, w_p, self.width)
    return tokens, {
        'clip_features': jnp.mean(tokens, axis=(2, 3)),
        'group_tokens': groups,
        'soft_assignments': tuple(soft_assignments),
        'assignments': tuple(assignments),
    }
