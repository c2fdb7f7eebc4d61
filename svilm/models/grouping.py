"""GroupViT-style grouping block: group tokens gather video tokens by assignment.

S-ViLM keeps M learnable group tokens as a side stream next to the video
tokens. After chosen backbone layers a grouping block assigns every video
token to one group (hard, straight-through Gumbel-softmax by default) and
moves each group token towards the mean value of the tokens assigned to it.
The video tokens themselves are only read, never merged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from svilm.models import layers

Array = Any
Dtype = Any


def assign(
  logits: Array, *, hard: bool, noise: Array | None = None, temperature: float = 1.0
) -> tuple[Array, Array]:
  """Assignment of tokens to groups from logits [..., N, M] (softmax over M).

  soft = softmax_m(logits), without noise.
  y = softmax_m((logits + noise) / temperature) if noise is given, else soft.
  A = one_hot(argmax_m y) + y - stop_gradient(y) if hard (value is exactly
  one-hot, gradient is that of y: straight-through), else A = y.

  Returns:
    (soft, A), both [..., N, M] float32.
  """
  logits = logits.astype(jnp.float32)
  soft = jax.nn.softmax(logits, axis=-1)
  if noise is None:
    y = soft
  else:
    y = jax.nn.softmax((logits + noise) / temperature, axis=-1)
  if not hard:
    return soft, y
  one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)
  # Parenthesised on purpose: y - sg(y) is exactly 0 in value (x - x == 0 in
  # floating point), so A is exactly one-hot; (one_hot + y) - y would not be.
  return soft, one_hot + (y - jax.lax.stop_gradient(y))


class GroupingBlock(nn.Module):
  """Updates group tokens [B, M, D] from video tokens [B, N, D].

  logits[b, n, m] = q_m . k_n / sqrt(D), q = Dense(LN(groups)),
  k, v = Dense(LN(tokens)). A = `assign(logits)`, with Gumbel(0, 1) noise
  from the 'gumbel' rng collection when train and gumbel are both on.
  groups <- groups + Dense_out(sum_n A[b,n,m] v_n / (sum_n A[b,n,m] + eps))
  groups <- groups + MLP(LN(groups))
  A group that receives no token gets a zero attention update. eps is 1, as
  GroupViT's `assign_eps`: with a hard assignment an empty group has mass 0 in
  the forward pass but the straight-through soft term still carries gradient,
  and a tiny eps turns that into a 1/eps^2 gradient explosion (measured: global
  gradient norms of 1e13 with eps=1e-6). With eps=1 the update of a group
  holding n tokens is n/(n+1) of their mean.

  Attributes:
    mlp_dim: hidden width of the group MLP.
    hard: straight-through one-hot assignment (default) or soft.
    gumbel: add Gumbel noise to the logits in training (default on).
    gumbel_temperature: softmax temperature of the noisy logits.
    eps: added to the per-group assignment mass before dividing (GroupViT: 1).
    dropout: dropout rate in the MLP.
    dtype: compute dtype (params stay float32; logits are float32).
  """

  mlp_dim: int
  hard: bool = True
  gumbel: bool = True
  gumbel_temperature: float = 1.0
  eps: float = 1.0
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, groups: Array, tokens: Array, *, train: bool
  ) -> tuple[Array, dict[str, Array]]:
    """Returns (new_groups [B, M, D], info).

    info['soft_assignment']: softmax_m(logits), noise-free and not hardened,
    [B, N, M]; info['assignment']: the A used for the update, [B, N, M].
    """
    d = groups.shape[-1]
    if tokens.shape[-1] != d:
      raise ValueError(
        f"Group tokens have width {d} but video tokens have width {tokens.shape[-1]}."
      )
    # The assignment is a softmax over groups for each token, so a vector added
    # to every query (a LayerNorm or Dense bias on the group side) shifts all
    # of a token's logits equally and has exactly zero gradient. Such dead
    # parameters only collect float noise, which Adam inflates to full-size
    # updates; the query path therefore has no biases.
    g = layers.layer_norm(self.dtype, name="ln_groups", use_bias=False)(groups)
    x = layers.layer_norm(self.dtype, name="ln_tokens")(tokens)
    q = layers.dense(d, ("embed", "kv"), self.dtype, name="query", use_bias=False)(g)
    k = layers.dense(d, ("embed", "kv"), self.dtype, name="key")(x)
    v = layers.dense(d, ("embed", "kv"), self.dtype, name="value")(x)

    logits = jnp.einsum("bnd,bmd->bnm", k, q, preferred_element_type=jnp.float32) / jnp.sqrt(d)
    noise = None
    if train and self.gumbel:
      noise = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
    soft, a = assign(logits, hard=self.hard, noise=noise, temperature=self.gumbel_temperature)

    # Normalised weighted mean of the values per group, in float32.
    mass = jnp.sum(a, axis=1)  # [B, M]
    pooled = jnp.einsum("bnm,bnd->bmd", a, v.astype(jnp.float32))
    pooled = pooled / (mass[..., None] + self.eps)
    groups = groups + layers.dense(d, ("kv", "embed"), self.dtype, name="out")(
      pooled.astype(self.dtype)
    )
    y = layers.layer_norm(self.dtype, name="ln_mlp")(groups)
    groups = groups + layers.MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(
      y, train=train
    )
    return groups, {"soft_assignment": soft, "assignment": a}
