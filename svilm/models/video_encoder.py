"""S-ViLM video encoder: tubelet ViT with a side stream of grouped tokens.

Video [B, T, H, W, 3] -> tubelets -> learned space-time positions -> `depth`
pre-LN transformer blocks over all N = N_t*H_p*W_p tokens. M learnable group
tokens never enter the transformer: after each layer listed in
`grouping_layers` a `GroupingBlock` reads the current video tokens and
updates the group tokens. Video tokens are not merged and go through every
layer, so per-position clip features for the temporal grouping loss and the
group tokens for spatial grounding come out of the same pass.

Param layout of the transformer blocks. Unscanned (default): 'block_1' ...
'block_{depth}', 1-based as `grouping_layers`. With scan_layers=True each
maximal run of blocks between grouping points is one nn.scan named
'blocks_{first}_{last}' (1-based, inclusive) whose leaves carry a leading
'layers' axis: blocks_{a}_{b}/...[k] == block_{a+k}/.... At depth 12 with
grouping after (6, 9, 12) that is blocks_1_6, blocks_7_9, blocks_10_12; a
grouping layer before the last leaves a trailing segment (grouping after
(2, 3) at depth 5 gives blocks_1_2, blocks_3_3, blocks_4_5). Everything
else ('embedding', 'grouping_{i}', ...) is named the same in both layouts.
Switch a checkpoint with `stack_block_params` / `unstack_block_params`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import numbers
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from svilm.models import grouping
from svilm.models import layers
from svilm.models import vit

Array = Any
Dtype = Any


def default_grouping_layers(depth: int) -> tuple[int, ...]:
  """(depth/2, 3*depth/4, depth), floored and deduplicated; (6, 9, 12) at 12.

  The paper groups after layers 6, 9 and 12 of a 12-layer ViT; this scales
  the same fractions to other depths.
  """
  return tuple(sorted({max(1, depth // 2), max(1, (3 * depth) // 4), depth}))


def validate_grouping_layers(group_layers: Sequence[int], depth: int) -> None:
  """Raises ValueError unless `group_layers` are distinct ints in [1, depth]."""
  group_layers = tuple(group_layers)
  if not group_layers:
    raise ValueError("grouping_layers must name at least one layer.")
  if len(set(group_layers)) != len(group_layers):
    raise ValueError(f"grouping_layers must be distinct, got {group_layers}.")
  bad = [
    layer
    for layer in group_layers
    if not isinstance(layer, numbers.Integral) or not 1 <= layer <= depth
  ]
  if bad:
    raise ValueError(
      f"grouping_layers are 1-based layer indices in "
      f"[1, depth={depth}]; got {group_layers} (bad: {bad})."
    )


def scan_segments(
  depth: int, grouping_layers: Sequence[int] | None = None
) -> tuple[tuple[int, int], ...]:
  """1-based inclusive (first, last) block runs between grouping points.

  The runs cover 1..depth in order and each ends at a grouping layer or at
  `depth`: scan_segments(12, (6, 9, 12)) == ((1, 6), (7, 9), (10, 12)).
  None means `default_grouping_layers(depth)`.
  """
  if grouping_layers is None:
    grouping_layers = default_grouping_layers(depth)
  validate_grouping_layers(grouping_layers, depth)
  ends = sorted({layer for layer in grouping_layers if layer < depth} | {depth})
  starts = [1] + [end + 1 for end in ends[:-1]]
  return tuple(zip(starts, ends))


def segment_name(first: int, last: int) -> str:
  """Param name of the scanned run of blocks first..last (1-based)."""
  return f"blocks_{first}_{last}"


def block_segments(
  depth: int, grouping_layers: Sequence[int] | None = None
) -> dict[str, tuple[str, ...]]:
  """Scanned segment param name -> the unscanned block names it stacks.

  E.g. {'blocks_1_6': ('block_1', ..., 'block_6'), 'blocks_7_9': ...}.
  """
  return {
    segment_name(a, b): tuple(f"block_{i}" for i in range(a, b + 1))
    for a, b in scan_segments(depth, grouping_layers)
  }


def stack_block_params(
  params: Mapping[str, Any], depth: int, grouping_layers: Sequence[int] | None = None
) -> dict[str, Any]:
  """VideoEncoder params, unscanned -> scan_layers=True layout (plain arrays).

  `params` is the encoder's own param tree (e.g. SViLM's
  params['video_encoder']); see `layers.stack_params`.
  """
  return layers.stack_params(params, block_segments(depth, grouping_layers))


def unstack_block_params(
  params: Mapping[str, Any], depth: int, grouping_layers: Sequence[int] | None = None
) -> dict[str, Any]:
  """Inverse of `stack_block_params` (scanned -> unscanned layout)."""
  return layers.unstack_params(params, block_segments(depth, grouping_layers))


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
    remat: rematerialisation of each transformer block, 'none', 'dots' or
      'full' (see layers.run_blocks): less activation memory in the backward
      pass for more recompute. Grouping blocks are never rematerialised.
    scan_layers: run each block segment (see `scan_segments`) as one
      nn.scan: program size and compile time stop growing with depth, the
      computation is the same, but params use the scanned layout (module
      docstring). Needed for remat to save memory on XLA:CPU.
    attention_query_chunk: > 0 computes each block's self-attention that many
      queries at a time, rematerialised per chunk (layers.SelfAttention): the
      same outputs, without the [heads, N, N] float32 logits of a whole clip
      (0.47 GB per clip and layer at 3136 tokens); 0 computes them at once.
    dtype: compute dtype; params are float32.
  """

  patch_size: tuple[int, int, int] = (2, 16, 16)
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout: float = 0.0
  pos_embedding: str = "joint"
  num_groups: int = 32
  grouping_layers: tuple[int, ...] | None = None
  hard_assignment: bool = True
  gumbel_noise: bool = True
  gumbel_temperature: float = 1.0
  remat: str = "none"
  scan_layers: bool = False
  # Queries per attention chunk (layers.SelfAttention); 0: the whole [N, N] attention at once.
  attention_query_chunk: int = 0
  dtype: Dtype = jnp.float32

  def grid_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int]:
    """(N_t, H_p, W_p) for a video of shape [B, T, H, W, C]; works unbound."""
    return vit.tubelet_grid(video_shape, self.patch_size)

  def resolved_grouping_layers(self) -> tuple[int, ...]:
    """The validated grouping layers (default filled in)."""
    group_layers = self.grouping_layers
    if group_layers is None:
      group_layers = default_grouping_layers(self.depth)
    group_layers = tuple(group_layers)
    validate_grouping_layers(group_layers, self.depth)
    return group_layers

  @nn.compact
  def __call__(self, video: Array, *, train: bool) -> tuple[Array, dict[str, Any]]:
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
    group_layers = self.resolved_grouping_layers()
    n_t, h_p, w_p = self.grid_shape(video.shape)
    batch = video.shape[0]

    x = vit.TubeletEmbedding(self.width, self.patch_size, self.dtype, name="embedding")(
      video.astype(self.dtype)
    )
    x = vit.SpaceTimePositionEmbedding(self.pos_embedding, self.dtype, name="pos_embedding")(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = x.reshape(batch, n_t * h_p * w_p, self.width)

    group_init = nn.with_logical_partitioning(
      nn.initializers.truncated_normal(stddev=0.02), ("groups", "embed")
    )
    groups = self.param("group_tokens", group_init, (self.num_groups, self.width))
    groups = jnp.broadcast_to(groups.astype(self.dtype)[None], (batch, self.num_groups, self.width))

    block = functools.partial(
      vit.EncoderBlock,
      self.num_heads,
      self.mlp_dim,
      self.dropout,
      self.dtype,
      query_chunk=self.attention_query_chunk,
    )
    # (param name, scan length or None, 1-based index of its last block).
    if self.scan_layers:
      runs = [
        (segment_name(a, b), b - a + 1, b) for a, b in scan_segments(self.depth, group_layers)
      ]
    else:
      runs = [(f"block_{i}", None, i) for i in range(1, self.depth + 1)]

    soft_assignments, assignments = [], []
    for name, scan_length, last in runs:
      x = layers.run_blocks(
        block(name=name), x, train=train, remat=self.remat, scan_length=scan_length
      )
      if last in group_layers:
        groups, info = grouping.GroupingBlock(
          mlp_dim=self.mlp_dim,
          hard=self.hard_assignment,
          gumbel=self.gumbel_noise,
          gumbel_temperature=self.gumbel_temperature,
          dropout=self.dropout,
          dtype=self.dtype,
          name=f"grouping_{last}",
        )(groups, x, train=train)
        soft_assignments.append(info["soft_assignment"])
        assignments.append(info["assignment"])

    x = layers.layer_norm(self.dtype, name="encoder_norm")(x)
    groups = layers.layer_norm(self.dtype, name="group_norm")(groups)
    tokens = x.reshape(batch, n_t, h_p, w_p, self.width)
    return tokens, {
      "clip_features": jnp.mean(tokens, axis=(2, 3)),
      "group_tokens": groups,
      "soft_assignments": tuple(soft_assignments),
      "assignments": tuple(assignments),
    }
