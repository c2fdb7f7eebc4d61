"""Shared Flax layers of both encoders: dense, LayerNorm, GELU, attention, MLP, block stacking.

Every parameter is created through `nn.with_logical_partitioning`, so
`model.init` returns `nn.LogicallyPartitioned` boxes carrying logical axis
names ('embed', 'mlp', 'heads', 'kv', 'vocab', 'groups'; None = never
sharded). Callers wanting plain arrays call `nn.meta.unbox(variables)`;
`nn.get_partition_spec(variables)` gives the logical specs. `apply` accepts
either form. Parameters are always float32; `dtype` is the compute dtype.

Both encoders run their transformer blocks through `run_blocks`, which adds
the two scaling options in one place:
- rematerialisation (`REMAT_POLICIES`): trade backward-pass activation
  memory for recomputing each block's forward pass;
- scan over layers: a run of identical blocks becomes one `nn.scan`, so XLA
  compiles one block instead of unrolling them (program size and compile
  time stop growing with depth; the computation is the same). Scanned
  params are stacked on a leading axis with logical name 'layers', a
  different checkpoint layout: convert with `stack_params` /
  `unstack_params` (the encoders wrap them).
Measured on XLA:CPU (jax 0.10.2), compiling jax.grad of the ViT-B video
encoder on a [2, 16, 224, 224, 3] video: temp memory 11.1 GiB unscanned
without remat, 11.6 GiB unscanned with 'full' (the unrolled recomputations
are not delayed), 9.0 GiB scanned, 1.2 GiB scanned with 'full'; every
variant compiles in 2-3 s. So use remat together with scan_layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = Any

Dtype = Any


# Logical axis name of the leading (layer) axis of scanned params.
LAYERS_AXIS = "layers"


# remat name -> jax.checkpoint policy (what the backward pass may keep from
# the forward pass of each block). 'none' does not wrap the block at all:
# a policy of None would mean "save nothing", i.e. 'full'.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# Used by both the ViT blocks and the grouping block. Xavier is what the
# reference ViT (big_vision, scenic) uses for its Dense kernels.
DEFAULT_KERNEL_INIT = nn.initializers.xavier_uniform()


_INV_SQRT2 = float(1 / np.sqrt(2))


def gelu(x: Array) -> Array:
  """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as in BERT and torch's F.gelu.

  The same function as `nn.gelu(x, approximate=False)`, which XLA lowers through erfc: two
  polynomial branches, a division and selects per element, three fusions in the backward
  pass. The erf form is one rational polynomial; on the default config's train step it was
  about 10% of the XLA:CPU step time (docs/benchmarks.md). Values differ by < 1e-6
  absolute (float32 rounding); for x << 0 the erf form's cancellation gives absolute, not
  relative, accuracy, which is what a network's activations need.
  """
  return 0.5 * x * (1 + jax.lax.erf(x * jnp.asarray(_INV_SQRT2, x.dtype)))


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """x / sqrt(||x||_2^2 + eps) along `axis`: the one L2 normalisation of the codebase.

  sqrt(sum + eps) rather than max(norm, eps): at a zero vector (an empty foreground, a padded
  row) the gradient of the norm is 0/0 = NaN, which max() does not stop, while this form's is
  finite (rsqrt(eps) times the identity). A zero vector stays zero; for ||x|| >> sqrt(eps) =
  1e-6 the result is x / ||x|| to float rounding.
  """
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


def layer_norm(
  dtype: Dtype, name: str | None = None, epsilon: float = 1e-6, use_bias: bool = True
) -> nn.LayerNorm:
  """LayerNorm whose scale and bias carry the logical axis name 'embed'."""
  return nn.LayerNorm(
    epsilon=epsilon,
    dtype=dtype,
    name=name,
    use_bias=use_bias,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
  )


def dense(
  features: int,
  names: tuple[str | None, str | None],
  dtype: Dtype,
  name: str | None = None,
  use_bias: bool = True,
  kernel_init=DEFAULT_KERNEL_INIT,
) -> nn.Dense:
  """nn.Dense with kernel axes `names` = (in, out) and bias axis (out,)."""
  return nn.Dense(
    features,
    dtype=dtype,
    name=name,
    use_bias=use_bias,
    kernel_init=nn.with_logical_partitioning(kernel_init, names),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (names[1],)),
  )


class SelfAttention(nn.Module):
  """Multi-head self-attention (param names as flax's MultiHeadDotProductAttention); with
  `context`, cross-attention (queries from x, keys and values from context).

  The key projection has no bias: a key bias adds q.b_k to every logit of a
  query's row, which the softmax over keys cancels, so its gradient is exactly
  zero; such a parameter only collects float noise that Adam inflates into
  full-size updates (and breaks sharded == unsharded). Importing BERT drops
  its key bias for the same reason: it never changes the output.

  q/k/v kernels are [D, heads, head_dim] ('embed', 'heads', 'kv'); the output
  kernel is [heads, head_dim, D] ('heads', 'kv', 'embed'). The softmax runs in
  float32 even when computing in bfloat16.
  """

  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  kernel_init: Callable = DEFAULT_KERNEL_INIT
  # > 0: queries in chunks of this many, one chunk's [heads, chunk, N] logits at a time, each
  # chunk rematerialised in the backward pass (see `_chunked_attention`); 0: all at once.
  query_chunk: int = 0

  @nn.compact
  def __call__(
    self, x: Array, mask: Array | None = None, *, train: bool, context: Array | None = None
  ) -> Array:
    """x [..., L, D]; context [..., N, D] (default: x), its leading dims broadcast against x's
    (e.g. [B, 1, N, D] keys for [B, S, L, D] queries: projected once, not S times); mask
    broadcastable to [..., heads, L, N] (True = attend)."""
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"Width {d} is not divisible by {self.num_heads} heads.")
    head_dim = d // self.num_heads
    context = x if context is None else context
    if context.shape[-1] != d:
      raise ValueError(f"context width {context.shape[-1]} differs from the query width {d}")

    def project(name: str, use_bias: bool, inputs: Array) -> Array:
      return HeadsDense(
        (self.num_heads, head_dim),
        ("embed", "heads", "kv"),
        use_bias=use_bias,
        dtype=self.dtype,
        kernel_init=self.kernel_init,
        name=name,
      )(inputs)

    q = project("query", True, x) / jnp.sqrt(head_dim).astype(self.dtype)
    k = project("key", False, context)
    v = project("value", True, context)
    length = q.shape[-3]
    query_independent = mask is None or mask.shape[-2] == 1
    if (
      self.query_chunk
      and length > self.query_chunk
      and query_independent
      and not (train and self.dropout)
    ):
      y = _chunked_attention(q, k, v, mask, self.query_chunk, self.dtype)
    else:
      weights = _attention_weights(q, k, mask, self.dtype)
      weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
      y = jnp.einsum("...hqk,...khd->...qhd", weights, v)
    return HeadsDense(
      (d,),
      ("heads", "kv", "embed"),
      num_in=2,
      dtype=self.dtype,
      kernel_init=self.kernel_init,
      name="out",
    )(y)


def _attention_weights(q: Array, k: Array, mask: Array | None, dtype: Dtype) -> Array:
  """softmax_k(q . k) [..., heads, Lq, N], the logits and the softmax in float32."""
  logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1).astype(dtype)


def _chunked_attention(
  q: Array, k: Array, v: Array, mask: Array | None, chunk: int, dtype: Dtype
) -> Array:
  """Attention of q [..., L, h, d] over k, v [..., N, h, d], `chunk` queries at a time.

  Every query's softmax runs over all N keys, exactly as without chunks (rows of the
  attention matrix are independent), but only one chunk's [..., h, chunk, N] logits and
  weights exist at a time, and `jax.checkpoint` recomputes them in the backward pass instead
  of keeping them: at the paper's 3136 video tokens per clip the full float32 logits are
  0.47 GB per clip and layer. The mask must not depend on the query (a key-padding mask or
  None). L is padded to a multiple of `chunk`; the padding queries are dropped.
  """
  length = q.shape[-3]
  count = -(-length // chunk)
  pad = count * chunk - length
  if pad:
    q = jnp.pad(q, [(0, 0)] * (q.ndim - 3) + [(0, pad), (0, 0), (0, 0)])
  # [count, ..., chunk, h, d]: the chunk index leads, for lax.map.
  chunks = jnp.moveaxis(q.reshape(*q.shape[:-3], count, chunk, *q.shape[-2:]), -4, 0)

  @jax.checkpoint
  def one(q_chunk):
    weights = _attention_weights(q_chunk, k, mask, dtype)
    return jnp.einsum("...hqk,...khd->...qhd", weights, v)

  out = jnp.moveaxis(jax.lax.map(one, chunks), 0, -4)  # [..., count, chunk, h, d]
  return out.reshape(*out.shape[:-4], count * chunk, *out.shape[-2:])[..., :length, :, :]


class HeadsDense(nn.Module):
  """nn.DenseGeneral for attention projections, with the kernel created in its final shape.

  Same parameters ('kernel' [*in, *features], 'bias' [*features]), same initialisation (the
  kernel is drawn for the flattened [prod(in), prod(features)] shape, as DenseGeneral does,
  then reshaped) and the same dot_general. The difference: DenseGeneral draws the *boxed*
  flat kernel and unboxes it to reshape, which under a logical-rules context applies the 3-d
  partition spec to the 2-d flat kernel and fails (seen inside nn.scan at trace time).

  Attributes:
    features: output dims, e.g. (heads, head_dim) for q/k/v or (D,) for the output.
    names: logical axis names of the kernel, input dims first.
    num_in: how many trailing input dims are contracted (1 for q/k/v, 2 for the output).
  """

  features: tuple[int, ...]
  names: tuple[str | None, ...]
  num_in: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Callable = DEFAULT_KERNEL_INIT

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[-self.num_in :]
    flat = (int(np.prod(in_shape)), int(np.prod(self.features)))
    init = lambda key, shape, dtype=jnp.float32: jnp.reshape(
      self.kernel_init(key, flat, dtype), shape
    )
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(init, self.names),
      in_shape + tuple(self.features),
      jnp.float32,
    )
    bias = None
    if self.use_bias:
      bias = self.param(
        "bias",
        nn.with_logical_partitioning(nn.initializers.zeros, self.names[self.num_in :]),
        tuple(self.features),
        jnp.float32,
      )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    contract = tuple(range(x.ndim - self.num_in, x.ndim))
    y = jax.lax.dot_general(x, kernel, ((contract, tuple(range(self.num_in))), ((), ())))
    return y if bias is None else y + bias


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> GELU -> Dropout -> Dense(D) -> Dropout, D = input width.

  GELU is the exact (erf) form (`gelu`), as in BERT, so text checkpoints map 1:1.
  """

  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  kernel_init: Any = DEFAULT_KERNEL_INIT

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    d = x.shape[-1]
    y = dense(self.mlp_dim, ("embed", "mlp"), self.dtype, name="fc1", kernel_init=self.kernel_init)(
      x
    )
    y = gelu(y)
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    y = dense(d, ("mlp", "embed"), self.dtype, name="fc2", kernel_init=self.kernel_init)(y)
    return nn.Dropout(self.dropout)(y, deterministic=not train)


def padding_to_attention_mask(mask: Array) -> Array:
  """Key-padding mask [..., L] (1 = real token) -> attention mask [..., 1, 1, L].

  Only keys are masked: rows of padded queries still attend to real tokens,
  and an all-padding row (a padded noun slot) attends uniformly, so every
  output stays finite.
  """
  return mask.astype(bool)[..., None, None, :]


def check_remat(name: str) -> None:
  """Raises ValueError unless `name` is a key of REMAT_POLICIES."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {name!r}.")


# Logical axes of the token stream between blocks [B, L, D]. Under a mesh and
# rules context (svilm/sharding.py) the batch is pinned to the data-parallel
# axes here; without one this is a no-op. Without the pin, XLA's sharding
# propagation under FSDP may keep weights split on 'embed' and gather the
# batch instead, measured as 8x the activation memory on 8 devices.
TOKEN_AXES = ("batch", None, None)


def _call_block(block: nn.Module, x: Array, mask: Array | None, train: bool) -> Array:
  # Positional `train`, so nn.remat can mark it static (static_argnums
  # counts the module as argument 0); a keyword would be traced.
  x = nn.with_logical_constraint(x, TOKEN_AXES)
  return nn.with_logical_constraint(block(x, mask, train=train), TOKEN_AXES)


def run_blocks(
  block: nn.Module,
  x: Array,
  mask: Array | None = None,
  *,
  train: bool,
  remat: str = "none",
  scan_length: int | None = None,
) -> Array:
  """Applies a transformer block (once, or `scan_length` times scanned).

  `block` is an unbound module defined in the caller's compact method (e.g.
  `EncoderBlock(..., name='block_3')`) with signature
  `block(x, mask, train=...) -> x`; its params live under its name.

  remat (see REMAT_POLICIES): 'none' stores every activation of the block
  for the backward pass (most memory, no recompute); 'dots' keeps only the
  matmul outputs without batch dimensions and recomputes the elementwise
  ops (LayerNorm, GELU, softmax, dropout); 'full' keeps only the block's
  input and recomputes the whole forward pass of the block in the backward
  pass (least memory, about one extra forward pass of compute). Values and
  gradients are unchanged. On XLA:CPU the saving only shows with a scan
  (module docstring).

  scan_length=n runs n blocks as one nn.scan: the params of `block` get a
  leading axis of size n with logical axis name 'layers' (layer k of the
  run at index k), 'params' and 'dropout' rngs are split per layer, and
  `mask` is broadcast to every layer. Compiles one block instead of n;
  the computation is the same.

  Args:
    block: the block module.
    x: [B, L, D] tokens.
    mask: attention mask for the block, or None.
    train: dropout on; static under remat.
    remat: 'none', 'full' or 'dots'.
    scan_length: None for a single block, else the number of scanned layers.

  Returns:
    [B, L, D] tokens after the block(s).

  Raises:
    ValueError: for an unknown remat name.
  """
  check_remat(remat)
  body = _call_block
  if remat != "none":
    # CSE prevention is only needed outside a scan (the loop already keeps
    # XLA from merging the recompute into the forward pass).
    body = nn.remat(
      _call_block,
      policy=REMAT_POLICIES[remat],
      static_argnums=(3,),
      prevent_cse=scan_length is None,
    )
  if scan_length is None:
    return body(block, x, mask, train)

  def scan_body(module: nn.Module, carry: Array, scan_mask: Array | None) -> tuple[Array, None]:
    return body(module, carry, scan_mask, train), None

  scanned = nn.scan(
    scan_body,
    variable_axes={"params": 0},
    split_rngs={"params": True, "dropout": True},
    in_axes=nn.broadcast,
    length=scan_length,
    metadata_params={nn.PARTITION_NAME: LAYERS_AXIS},
  )
  x, _ = scanned(block, x, mask)
  return x


def _stack(leaves: Sequence[Array]) -> Array:
  # Host (numpy) checkpoints stay on the host; anything else goes via jnp.
  if all(isinstance(leaf, np.ndarray) for leaf in leaves):
    return np.stack(leaves)
  return jnp.stack(leaves)


def stack_params(
  params: Mapping[str, Any], segments: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
  """Unscanned -> scanned param layout.

  For every `segment -> (name_0, ..., name_{n-1})` of `segments`, the
  entries params[name_k] (identical trees) are replaced by one entry
  params[segment] whose leaves are the name_k leaves stacked on a new
  leading axis (index k = name_k). Other entries are kept as they are.
  Boxed (LogicallyPartitioned) params are unboxed; the result holds plain
  arrays.

  Raises:
    ValueError: if a name is missing (e.g. params already scanned) or the
      trees of one segment differ in structure.
  """
  params = dict(nn.meta.unbox(params))
  for segment, names in segments.items():
    missing = [n for n in names if n not in params]
    if missing:
      raise ValueError(
        f"Cannot build scanned segment {segment!r}: params "
        f"have no {missing} (already scanned?); keys are "
        f"{sorted(params)}."
      )
    trees = [params.pop(n) for n in names]
    params[segment] = jax.tree.map(lambda *xs: _stack(xs), *trees)
  return params


def unstack_params(
  params: Mapping[str, Any], segments: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
  """Scanned -> unscanned param layout; the inverse of `stack_params`.

  params[segment] (leaves with leading axis n = len(names)) is replaced by
  params[name_k] = its leaves at index k.

  Raises:
    ValueError: if a segment is missing or its leading axis is not n.
  """
  params = dict(nn.meta.unbox(params))
  for segment, names in segments.items():
    if segment not in params:
      raise ValueError(
        f"params have no scanned segment {segment!r} (not scanned?); keys are {sorted(params)}."
      )
    tree = params.pop(segment)
    for leaf in jax.tree.leaves(tree):
      if leaf.shape[:1] != (len(names),):
        raise ValueError(
          f"Segment {segment!r} holds {len(names)} layers but has a leaf of shape {leaf.shape}."
        )
    for k, name in enumerate(names):
      params[name] = jax.tree.map(lambda x, k=k: x[k], tree)
  return params
