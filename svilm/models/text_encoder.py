"""BERT-structured text encoder for captions and noun-phrase prompts.

The layout mirrors HuggingFace/Google BERT one-to-one (token + learned
position embeddings, embedding LayerNorm, post-LN blocks with exact GELU,
LayerNorm epsilon 1e-12), and submodules are named after BERT's, so a
user's BERT checkpoint maps onto it by renaming and reshaping; the table is
in docs/model.md. The output is the final hidden state of the first ([CLS])
token; BERT's pooler (Dense + tanh) is not part of the model.

Param layout of the blocks. Unscanned (default, the BERT mapping of
docs/model.md): 'layer_0' ... 'layer_{depth-1}', 0-based as in BERT. With
scan_layers=True all blocks are one nn.scan named 'layers' whose leaves
carry a leading 'layers' axis: layers/...[i] == layer_{i}/.... Convert a
checkpoint with `stack_layer_params` / `unstack_layer_params` (load BERT
weights in the unscanned layout, then stack).
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from svilm.models import layers

Array = Any
Dtype = Any

# BERT's initialiser and LayerNorm epsilon, kept so that a freshly
# initialised model and a loaded checkpoint live on the same scale.
BERT_INIT = nn.initializers.normal(stddev=0.02)
BERT_LN_EPS = 1e-12


# Param name of the scanned stack of BertLayers.
SCANNED_LAYERS = "layers"


def layer_segments(depth: int) -> dict[str, tuple[str, ...]]:
  """{'layers': ('layer_0', ..., 'layer_{depth-1}')}, the one scan segment."""
  return {SCANNED_LAYERS: tuple(f"layer_{i}" for i in range(depth))}


def stack_layer_params(params: Mapping[str, Any], depth: int) -> dict[str, Any]:
  """TextEncoder params, unscanned -> scan_layers=True layout (plain arrays).

  `params` is the encoder's own param tree (e.g. SViLM's
  params['text_encoder']); see `layers.stack_params`.
  """
  return layers.stack_params(params, layer_segments(depth))


def unstack_layer_params(params: Mapping[str, Any], depth: int) -> dict[str, Any]:
  """Inverse of `stack_layer_params` (scanned -> unscanned layout)."""
  return layers.unstack_params(params, layer_segments(depth))


class BertLayer(nn.Module):
  """Post-LN block: x = LN(x + Attn(x)); x = LN(x + Dense(GELU(Dense(x)))).

  Input [B, L, D]; `mask` is a boolean attention mask [B, 1, 1, L].
  """

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array, *, train: bool) -> Array:
    d = x.shape[-1]
    y = layers.SelfAttention(
      self.num_heads, self.dropout, self.dtype, kernel_init=BERT_INIT, name="attention"
    )(x, mask, train=train)
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    x = layers.layer_norm(self.dtype, name="attention_layernorm", epsilon=BERT_LN_EPS)(x + y)
    y = layers.dense(
      self.mlp_dim, ("embed", "mlp"), self.dtype, name="intermediate", kernel_init=BERT_INIT
    )(x)
    y = layers.gelu(y)
    y = layers.dense(d, ("mlp", "embed"), self.dtype, name="output", kernel_init=BERT_INIT)(y)
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return layers.layer_norm(self.dtype, name="output_layernorm", epsilon=BERT_LN_EPS)(x + y)


class TextEncoder(nn.Module):
  """BERT-like encoder; pooled output = final hidden state of token 0 ([CLS]).

  Defaults are BERT-base sizes; the paper's depth (12) is unconfirmed in the
  paper. Token-type embeddings are not modelled (every input is segment 0):
  a BERT checkpoint's token_type_embeddings[0] is folded into the position
  table when loading (docs/model.md).

  Attributes:
    vocab_size: number of token ids.
    width: hidden width D.
    depth: number of BertLayers.
    num_heads: attention heads.
    mlp_dim: intermediate (MLP) width.
    max_len: size of the position table; longer inputs raise ValueError.
    dropout: dropout on embeddings, attention and block outputs.
    remat: rematerialisation of each BertLayer, 'none', 'dots' or 'full'
      (see layers.run_blocks): less activation memory in the backward pass for
      more recompute.
    scan_layers: run all BertLayers as one nn.scan ('layers'): program
      size and compile time stop growing with depth, the computation is the
      same, but params use the scanned layout (module docstring). Needed
      for remat to save memory on XLA:CPU.
    dtype: compute dtype; params are float32.
  """

  vocab_size: int = 30522
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_len: int = 512
  dropout: float = 0.0
  remat: str = "none"
  scan_layers: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """Encodes token ids.

    Args:
      tokens: int [..., L] token ids, the first one being [CLS] (or BOS).
      mask: [..., L], 1 for real tokens and 0 for padding; padded keys are
        excluded from attention, so their ids never change the output. An
        all-zero row (a padded noun slot) gives a finite, meaningless output.
      train: enables dropout ('dropout' rng).

    Returns:
      pooled [..., D] (hidden state of token 0) and {'tokens': [..., L, D]}.
    """
    if tokens.shape != mask.shape:
      raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must have the same shape.")
    *lead, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f"Text length {length} exceeds max_len {self.max_len}.")
    # Nouns come as [B, K, Ln]: run them as one [B*K, Ln] batch.
    tokens = tokens.reshape(-1, length)
    mask = mask.reshape(-1, length)

    x = nn.Embed(
      self.vocab_size,
      self.width,
      dtype=self.dtype,
      embedding_init=nn.with_logical_partitioning(BERT_INIT, ("vocab", "embed")),
      name="word_embeddings",
    )(tokens)
    pos = self.param(
      "position_embeddings",
      nn.with_logical_partitioning(BERT_INIT, (None, "embed")),
      (self.max_len, self.width),
    )
    x = x + pos[:length].astype(self.dtype)[None]
    x = layers.layer_norm(self.dtype, name="embeddings_layernorm", epsilon=BERT_LN_EPS)(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)

    attn_mask = layers.padding_to_attention_mask(mask)
    layer = functools.partial(BertLayer, self.num_heads, self.mlp_dim, self.dropout, self.dtype)
    if self.scan_layers:
      x = layers.run_blocks(
        layer(name=SCANNED_LAYERS),
        x,
        attn_mask,
        train=train,
        remat=self.remat,
        scan_length=self.depth,
      )
    else:
      for i in range(self.depth):
        x = layers.run_blocks(layer(name=f"layer_{i}"), x, attn_mask, train=train, remat=self.remat)

    x = x.reshape(*lead, length, self.width)
    return x[..., 0, :], {"tokens": x}
