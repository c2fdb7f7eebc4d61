"""PyTorch (eager, float32) re-implementation of svilm's VideoEncoder, for benchmarking only.

benchmarks/vs_pytorch.py times our Flax train step against this module's, on the same CPU in
the same process. To make that a comparison of frameworks and not of models, this is the same
function as svilm/models/video_encoder.py (with vit.py and grouping.py): the same tubelet Conv3d,
'joint' (or 'factorised') learned positions, pre-LN blocks with a key projection without bias,
exact-erf GELU, grouping blocks with the hard straight-through (Gumbel) assignment and eps=1,
and the same parameter shapes. `load_flax_params` copies a Flax param tree into it, and the
benchmark's --check verifies that both compute the same outputs and gradients.

torch is not a dependency of svilm: `pip install -e ".[pytorch_reference]"` installs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# Flax LayerNorm's epsilon in layers.layer_norm.
LN_EPS = 1e-6


def _dropout(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
  # Flax's nn.Dropout returns its input untouched at rate 0; skip the call the same way so
  # eager PyTorch is not charged for a no-op kernel launch XLA never runs.
  return F.dropout(x, rate, training) if rate and training else x


class Mlp(nn.Module):
  """fc1 -> exact GELU -> dropout -> fc2 -> dropout (layers.MlpBlock)."""

  def __init__(self, width: int, mlp_dim: int, dropout: float):
    super().__init__()
    self.fc1 = nn.Linear(width, mlp_dim)
    self.fc2 = nn.Linear(mlp_dim, width)
    self.dropout = dropout

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = _dropout(F.gelu(self.fc1(x), approximate="none"), self.dropout, self.training)
    return _dropout(self.fc2(y), self.dropout, self.training)


class SelfAttention(nn.Module):
  """layers.SelfAttention: q and v with bias, k without; q scaled by 1/sqrt(head_dim).

  attention='math' runs the same ops as ours (matmul, float32 softmax, matmul);
  'sdpa' uses F.scaled_dot_product_attention (PyTorch's fused CPU kernel, same function).
  """

  def __init__(self, width: int, num_heads: int, dropout: float, attention: str = "math"):
    super().__init__()
    if width % num_heads:
      raise ValueError(f"Width {width} is not divisible by {num_heads} heads.")
    if attention not in ("math", "sdpa"):
      raise ValueError(f"attention must be 'math' or 'sdpa', got {attention!r}.")
    self.num_heads, self.head_dim = num_heads, width // num_heads
    self.query = nn.Linear(width, width)
    self.key = nn.Linear(width, width, bias=False)
    self.value = nn.Linear(width, width)
    self.out = nn.Linear(width, width)
    self.dropout, self.attention = dropout, attention

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """x [B, L, D] -> [B, L, D]."""
    b, n, d = x.shape
    heads = lambda t: t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
    q = heads(self.query(x)) / math.sqrt(self.head_dim)
    k, v = heads(self.key(x)), heads(self.value(x))
    if self.attention == "sdpa":
      y = F.scaled_dot_product_attention(
        q, k, v, dropout_p=self.dropout if self.training else 0.0, scale=1.0
      )
    else:
      weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
      y = _dropout(weights, self.dropout, self.training) @ v
    return self.out(y.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
  """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)) (vit.EncoderBlock)."""

  def __init__(
    self, width: int, num_heads: int, mlp_dim: int, dropout: float, attention: str = "math"
  ):
    super().__init__()
    self.ln_attn = nn.LayerNorm(width, eps=LN_EPS)
    self.attention = SelfAttention(width, num_heads, dropout, attention)
    self.ln_mlp = nn.LayerNorm(width, eps=LN_EPS)
    self.mlp = Mlp(width, mlp_dim, dropout)
    self.dropout = dropout

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + _dropout(self.attention(self.ln_attn(x)), self.dropout, self.training)
    return x + self.mlp(self.ln_mlp(x))


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
  """Gumbel(0, 1) noise of x's shape: -log(-log(u)), u uniform in [tiny, 1) (as jax.random)."""
  u = torch.rand(x.shape, generator=generator, dtype=torch.float32, device=x.device)
  u = u.clamp_min(torch.finfo(torch.float32).tiny)
  return -torch.log(-torch.log(u))


class GroupingBlock(nn.Module):
  """grouping.GroupingBlock: group tokens [B, M, D] gather video tokens [B, N, D].

  logits = k.q / sqrt(D) with q = query(LN_nobias(groups)), k, v from LN(tokens);
  y = softmax((logits + gumbel) / temperature) (noise only in training with gumbel on);
  A = one_hot(argmax y) + (y - y.detach()) if hard else y;
  groups += out(sum_n A v / (sum_n A + eps)); groups += MLP(LN(groups)).
  """

  def __init__(
    self,
    width: int,
    mlp_dim: int,
    *,
    hard: bool,
    gumbel: bool,
    gumbel_temperature: float,
    dropout: float,
    eps: float = 1.0,
  ):
    super().__init__()
    self.ln_groups = nn.LayerNorm(width, eps=LN_EPS, bias=False)
    self.ln_tokens = nn.LayerNorm(width, eps=LN_EPS)
    self.query = nn.Linear(width, width, bias=False)
    self.key = nn.Linear(width, width)
    self.value = nn.Linear(width, width)
    self.out = nn.Linear(width, width)
    self.ln_mlp = nn.LayerNorm(width, eps=LN_EPS)
    self.mlp = Mlp(width, mlp_dim, dropout)
    self.hard, self.gumbel, self.temperature, self.eps = hard, gumbel, gumbel_temperature, eps

  def forward(
    self, groups: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None = None
  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (new groups [B, M, D], soft assignment [B, N, M], A [B, N, M])."""
    d = groups.shape[-1]
    q = self.query(self.ln_groups(groups))
    x = self.ln_tokens(tokens)
    k, v = self.key(x), self.value(x)
    logits = (k @ q.transpose(1, 2)) / math.sqrt(d)
    soft = torch.softmax(logits, dim=-1)
    y = soft
    if self.training and self.gumbel:
      y = torch.softmax((logits + gumbel_like(logits, generator)) / self.temperature, dim=-1)
    a = y
    if self.hard:
      one_hot = F.one_hot(y.argmax(dim=-1), y.shape[-1]).to(y.dtype)
      a = one_hot + (y - y.detach())  # exactly one-hot in value, gradient of y
    mass = a.sum(dim=1)  # [B, M]
    pooled = (a.transpose(1, 2) @ v) / (mass[..., None] + self.eps)
    groups = groups + self.out(pooled)
    return groups + self.mlp(self.ln_mlp(groups)), soft, a


class VideoEncoder(nn.Module):
  """video_encoder.VideoEncoder in PyTorch (float32; remat and scan do not apply).

  Same constructor arguments as the Flax module, plus the token grid `grid` = (N_t, H_p, W_p)
  that sizes the position table (Flax sizes it from the video seen at init) and `attention`
  (see SelfAttention). Submodules are named as the Flax params: blocks['block_i'] and
  groupings['grouping_i'] with 1-based i.
  """

  def __init__(
    self,
    grid: Sequence[int],
    *,
    patch_size: Sequence[int] = (2, 16, 16),
    width: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_dim: int = 3072,
    dropout: float = 0.0,
    pos_embedding: str = "joint",
    num_groups: int = 32,
    grouping_layers: Sequence[int] | None = None,
    hard_assignment: bool = True,
    gumbel_noise: bool = True,
    gumbel_temperature: float = 1.0,
    attention: str = "math",
  ):
    super().__init__()
    if grouping_layers is None:  # video_encoder.default_grouping_layers
      grouping_layers = sorted({max(1, depth // 2), max(1, (3 * depth) // 4), depth})
    self.grouping_layers = tuple(grouping_layers)
    self.grid, self.width, self.dropout = tuple(grid), width, dropout
    self.pos_kind = pos_embedding
    self.embedding = nn.Conv3d(3, width, kernel_size=tuple(patch_size), stride=tuple(patch_size))
    n_t, h_p, w_p = self.grid
    if pos_embedding == "joint":
      self.pos_joint = nn.Parameter(torch.zeros(n_t * h_p * w_p, width))
    elif pos_embedding == "factorised":
      self.pos_temporal = nn.Parameter(torch.zeros(n_t, width))
      self.pos_spatial = nn.Parameter(torch.zeros(h_p * w_p, width))
    else:
      raise ValueError(f"pos_embedding must be 'joint' or 'factorised', got {pos_embedding!r}.")
    self.group_tokens = nn.Parameter(torch.zeros(num_groups, width))
    self.blocks = nn.ModuleDict(
      {
        f"block_{i}": EncoderBlock(width, num_heads, mlp_dim, dropout, attention)
        for i in range(1, depth + 1)
      }
    )
    self.groupings = nn.ModuleDict(
      {
        f"grouping_{i}": GroupingBlock(
          width,
          mlp_dim,
          hard=hard_assignment,
          gumbel=gumbel_noise,
          gumbel_temperature=gumbel_temperature,
          dropout=dropout,
        )
        for i in self.grouping_layers
      }
    )
    self.encoder_norm = nn.LayerNorm(width, eps=LN_EPS)
    self.group_norm = nn.LayerNorm(width, eps=LN_EPS)

  def forward(
    self, video: torch.Tensor, generator: torch.Generator | None = None
  ) -> tuple[torch.Tensor, dict[str, Any]]:
    """video [B, T, H, W, 3] -> (tokens [B, N_t, H_p, W_p, D], intermediates) as the Flax one.

    intermediates: 'clip_features' [B, N_t, D], 'group_tokens' [B, M, D], and tuples
    'soft_assignments' / 'assignments' of [B, N, M] per grouping block. Gumbel noise (from
    `generator`) and dropout apply in training mode (module.train()).
    """
    b = video.shape[0]
    n_t, h_p, w_p = self.grid
    # Channels-last in, as ours: Conv3d wants [B, C, T, H, W] and gives [B, D, N_t, H_p, W_p].
    x = self.embedding(video.permute(0, 4, 1, 2, 3)).flatten(2).transpose(1, 2)  # [B, N, D]
    if self.pos_kind == "joint":
      x = x + self.pos_joint
    else:
      pos = self.pos_temporal[:, None, :] + self.pos_spatial[None, :, :]
      x = x + pos.reshape(n_t * h_p * w_p, self.width)
    x = _dropout(x, self.dropout, self.training)
    groups = self.group_tokens.expand(b, -1, -1)
    soft_assignments, assignments = [], []
    for i, block in enumerate(self.blocks.values(), start=1):
      x = block(x)
      if i in self.grouping_layers:
        groups, soft, a = self.groupings[f"grouping_{i}"](groups, x, generator)
        soft_assignments.append(soft)
        assignments.append(a)
    tokens = self.encoder_norm(x).reshape(b, n_t, h_p, w_p, self.width)
    return tokens, {
      "clip_features": tokens.mean(dim=(2, 3)),
      "group_tokens": self.group_norm(groups),
      "soft_assignments": tuple(soft_assignments),
      "assignments": tuple(assignments),
    }


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = np.asarray(value, dtype=np.float32)
  return flat


def _torch_value(flax_name: str, torch_name: str, x: np.ndarray) -> np.ndarray:
  """A Flax leaf rearranged into the layout of the torch parameter it maps to."""
  if torch_name == "embedding.weight":  # [kt, kh, kw, C, D] -> [D, C, kt, kh, kw]
    return x.transpose(4, 3, 0, 1, 2)
  if flax_name.endswith("kernel"):
    if "/attention/out/" in flax_name:  # [heads, head_dim, D] -> [D, heads*head_dim]
      return x.reshape(-1, x.shape[-1]).T
    return x.reshape(x.shape[0], -1).T  # [D, (heads, head_dim)] -> [out, in]
  if flax_name.endswith("bias"):
    return x.reshape(-1)  # q/v bias [heads, head_dim] -> [D]
  return x  # position tables, group tokens, LN scales


def _torch_name(flax_name: str) -> str:
  """'block_3/attention/query/kernel' -> 'blocks.block_3.attention.query.weight' etc."""
  parts = flax_name.split("/")
  renames = {"kernel": "weight", "scale": "weight"}
  parts = [renames.get(p, p) for p in parts]
  if parts[0].startswith("block_"):
    parts.insert(0, "blocks")
  elif parts[0].startswith("grouping_"):
    parts.insert(0, "groupings")
  elif parts[0] == "embedding":  # embedding/conv/* -> embedding.*
    parts = ["embedding", parts[-1]]
  elif parts[0] == "pos_embedding":
    parts = [f"pos_{parts[1]}"]
  return ".".join(parts)


def load_flax_params(torch_module: VideoEncoder, flax_params: Mapping[str, Any]) -> None:
  """Copies our VideoEncoder's params (unscanned layout) into `torch_module`, in place.

  `flax_params` is the encoder's param tree ({'block_1': ..., 'embedding': ...}) or variables
  {'params': ...}, boxed or not (scanned checkpoints: video_encoder.unstack_block_params
  first). Every torch parameter must receive exactly one Flax leaf of the matching size.

  Raises:
    ValueError: on a leaf with no torch parameter, a torch parameter left unset, or a shape
      mismatch.
  """
  import flax.linen as flax_nn  # Local: this file's classes do not need JAX.

  tree = flax_nn.meta.unbox(flax_params)
  if set(tree) == {"params"}:
    tree = tree["params"]
  targets = dict(torch_module.named_parameters())
  unset = set(targets)
  with torch.no_grad():
    for flax_name, value in _flatten(tree).items():
      torch_name = _torch_name(flax_name)
      if torch_name not in targets:
        raise ValueError(f"Flax param {flax_name!r} has no torch counterpart {torch_name!r}.")
      value = _torch_value(flax_name, torch_name, value)
      if tuple(value.shape) != tuple(targets[torch_name].shape):
        raise ValueError(
          f"{flax_name} -> {torch_name}: shape {value.shape} vs {tuple(targets[torch_name].shape)}."
        )
      targets[torch_name].copy_(torch.tensor(value))  # copies: jax arrays are read-only
      unset.discard(torch_name)
  if unset:
    raise ValueError(f"Torch params without a Flax value: {sorted(unset)}.")
