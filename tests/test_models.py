"""Tests for the S-ViLM Flax model: ViT pieces, grouping, both towers, SViLM."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svilm.models import grouping
from svilm.models import layers
from svilm.models import svilm
from svilm.models import text_encoder
from svilm.models import video_encoder
from svilm.models import vit

# Video [2, 4, 32, 32, 3] with tubelets (2, 16, 16) -> grid (2, 2, 2), N = 8.
VIDEO_KW = dict(
  patch_size=(2, 16, 16),
  width=16,
  depth=3,
  num_heads=2,
  mlp_dim=32,
  num_groups=4,
  grouping_layers=(2, 3),
)
TEXT_KW = dict(vocab_size=50, width=16, depth=2, num_heads=2, mlp_dim=32, max_len=8)
B, K, L, LN = 2, 3, 6, 4


def _video(seed=0, shape=(B, 4, 32, 32, 3)):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _text(seed, shape):
  tokens = jax.random.randint(jax.random.PRNGKey(seed), shape, 1, 50)
  mask = jnp.ones(shape, jnp.int32).at[..., -2:].set(0)
  return tokens, mask


@pytest.fixture(scope="module")
def model_and_params():
  model = svilm.SViLM(video=VIDEO_KW, text=TEXT_KW, embed_dim=8)
  variables = model.init(
    jax.random.PRNGKey(0), _video(), *_text(1, (B, L)), *_text(2, (B, K, LN)), train=False
  )
  return model, variables


def test_svilm_output_and_intermediate_shapes(model_and_params):
  model, variables = model_and_params
  outputs, inter = model.apply(
    variables,
    _video(),
    *_text(1, (B, L)),
    *_text(2, (B, K, LN)),
    train=True,
    rngs={"gumbel": jax.random.PRNGKey(3)},
  )
  shapes = jax.tree_util.tree_map(lambda x: x.shape, (outputs, inter))
  assert shapes[0] == {
    "clip_emb": (B, 2, 8),
    "group_emb": (B, 4, 8),
    "text_emb": (B, 8),
    "noun_emb": (B, K, 8),
    "logit_scale": (),
  }
  assert shapes[1] == {
    "clip_features": (B, 2, 16),
    "group_tokens": (B, 4, 16),
    "soft_assignments": ((B, 8, 4),) * 2,
    "assignments": ((B, 8, 4),) * 2,
    "clip_emb": (B, 2, 8),
    "tokens": (B, 2, 2, 2, 16),
    "text_tokens": (B, L, 16),
    "noun_tokens": (B, K, LN, 16),
  }
  for name in ("group_emb", "text_emb", "noun_emb"):
    np.testing.assert_allclose(jnp.linalg.norm(outputs[name], axis=-1), 1.0, rtol=1e-5)
  # z^k is the spatial mean of the final tokens at temporal position k.
  np.testing.assert_allclose(inter["clip_features"], inter["tokens"].mean(axis=(2, 3)), rtol=1e-6)
  np.testing.assert_allclose(outputs["logit_scale"], 1 / 0.07, rtol=1e-5)


def test_encode_methods_match_call(model_and_params):
  model, variables = model_and_params
  outputs, _ = model.apply(
    variables, _video(), *_text(1, (B, L)), *_text(2, (B, K, LN)), train=False
  )
  video_out, _ = model.apply(variables, _video(), train=False, method=svilm.SViLM.encode_video)
  noun_emb, _ = model.apply(
    variables, *_text(2, (B, K, LN)), train=False, method=svilm.SViLM.encode_text
  )
  np.testing.assert_allclose(video_out["clip_emb"], outputs["clip_emb"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(noun_emb, outputs["noun_emb"], rtol=1e-5, atol=1e-6)


def test_jitted_forward_matches_eager(model_and_params):
  model, variables = model_and_params
  args = (_video(), *_text(1, (B, L)), *_text(2, (B, K, LN)))
  fwd = jax.jit(lambda v, *a: model.apply(v, *a, train=False)[0])
  jitted, eager = fwd(variables, *args), model.apply(variables, *args, train=False)[0]
  for name in eager:
    assert np.all(np.isfinite(jitted[name]))
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-4, atol=1e-5)


def test_params_are_logically_partitioned_and_unbox_to_plain_float32(model_and_params):
  model, variables = model_and_params
  specs = nn.get_partition_spec(variables)["params"]
  assert tuple(specs["text_encoder"]["word_embeddings"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["video_encoder"]["group_tokens"]) == ("groups", "embed")
  assert tuple(specs["video_encoder"]["block_1"]["attention"]["query"]["kernel"]) == (
    "embed",
    "heads",
    "kv",
  )
  plain = nn.meta.unbox(variables)
  leaves = jax.tree_util.tree_leaves(plain)
  assert all(isinstance(x, jax.Array) and x.dtype == jnp.float32 for x in leaves)
  args = (_video(), *_text(1, (B, L)), *_text(2, (B, K, LN)))
  boxed_out = model.apply(variables, *args, train=False)[0]
  plain_out = model.apply(plain, *args, train=False)[0]
  np.testing.assert_array_equal(boxed_out["text_emb"], plain_out["text_emb"])


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = svilm.SViLM(video=VIDEO_KW, text=TEXT_KW, embed_dim=8, dtype=jnp.bfloat16)
  args = (_video(), *_text(1, (B, L)), *_text(2, (B, K, LN)))
  variables = nn.meta.unbox(model.init(jax.random.PRNGKey(0), *args, train=False))
  assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  outputs, inter = model.apply(variables, *args, train=False)
  assert outputs["clip_emb"].dtype == jnp.float32
  assert inter["tokens"].dtype == jnp.bfloat16


def test_fixed_temperature_has_no_param_and_scale_is_clipped():
  model = svilm.SViLM(
    video=VIDEO_KW, text=TEXT_KW, embed_dim=8, temperature_init=0.001, learn_temperature=False
  )
  args = (_video(), *_text(1, (B, L)), *_text(2, (B, K, LN)))
  variables = model.init(jax.random.PRNGKey(0), *args, train=False)
  assert "log_logit_scale" not in variables["params"]
  outputs, _ = model.apply(variables, *args, train=False)
  assert float(outputs["logit_scale"]) == 100.0  # 1/0.001 clipped to 100.


def test_pool_video_embedding_hand_computed():
  clip = jnp.array([[[3.0, 0.0], [0.0, 4.0], [100.0, -7.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
  weights = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  # Row 0: mean of the first two = (1.5, 2), norm 2.5. Row 1: no weight.
  np.testing.assert_allclose(
    svilm.pool_video_embedding(clip, weights), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6
  )
  clip = jnp.array([[[1.0, 2.0], [3.0, 6.0]]])  # Mean (2, 4), norm 2*sqrt(5).
  np.testing.assert_allclose(
    svilm.pool_video_embedding(clip), [[1 / math.sqrt(5), 2 / math.sqrt(5)]], rtol=1e-6
  )


def test_tubelet_embedding_is_a_linear_map_of_each_patch():
  module = vit.TubeletEmbedding(width=5, patch_size=(2, 4, 4))
  video = _video(shape=(1, 4, 8, 4, 3))
  variables = nn.meta.unbox(module.init(jax.random.PRNGKey(0), video))
  out = module.apply(variables, video)
  assert out.shape == (1, 2, 2, 1, 5)
  kernel = variables["params"]["conv"]["kernel"]
  bias = variables["params"]["conv"]["bias"]
  # Token (t=1, h=1, w=0) sees frames 2:4, rows 4:8, columns 0:4.
  patch = video[0, 2:4, 4:8, 0:4, :]
  expected = jnp.einsum("thwc,thwcd->d", patch, kernel) + bias
  np.testing.assert_allclose(out[0, 1, 1, 0], expected, rtol=1e-5, atol=1e-5)


def test_gelu_is_exact_gelu_hand_computed():
  # Phi(x) and phi(x) of the standard normal, by hand: Phi(1) = 0.8413447461, phi(1) = 0.2419707245.
  x = jnp.array([0.0, 1.0, -1.0, 3.0])
  np.testing.assert_allclose(
    layers.gelu(x), [0.0, 0.8413447461, -0.1586552539, 2.9959502665], rtol=1e-6, atol=1e-7
  )
  # d/dx x Phi(x) = Phi(x) + x phi(x).
  np.testing.assert_allclose(jax.grad(layers.gelu)(1.0), 0.8413447461 + 0.2419707245, rtol=1e-6)
  grid = jnp.linspace(-8.0, 8.0, 1001)
  np.testing.assert_allclose(layers.gelu(grid), nn.gelu(grid, approximate=False), atol=2e-6)
  np.testing.assert_allclose(
    jax.vmap(jax.grad(layers.gelu))(grid),
    jax.vmap(jax.grad(lambda v: nn.gelu(v, approximate=False)))(grid),
    atol=4e-6,
  )


def test_tubelet_divisibility_error_names_sizes():
  encoder = video_encoder.VideoEncoder(**VIDEO_KW)
  assert encoder.grid_shape((B, 4, 32, 48, 3)) == (2, 2, 3)
  with pytest.raises(ValueError, match=r"T=5.*tubelet size 2"):
    encoder.init(jax.random.PRNGKey(0), _video(shape=(1, 5, 32, 32, 3)), train=False)


@pytest.mark.parametrize("layers", [(0, 2), (2, 4), (2, 2), ()])
def test_grouping_layers_validation(layers):
  encoder = video_encoder.VideoEncoder(**{**VIDEO_KW, "grouping_layers": layers})
  with pytest.raises(ValueError, match="grouping_layers"):
    encoder.init(jax.random.PRNGKey(0), _video(), train=False)


def test_default_grouping_layers():
  assert video_encoder.default_grouping_layers(12) == (6, 9, 12)
  assert video_encoder.default_grouping_layers(4) == (2, 3, 4)
  assert video_encoder.default_grouping_layers(1) == (1,)


def test_factorised_position_embedding_shapes():
  encoder = video_encoder.VideoEncoder(**{**VIDEO_KW, "pos_embedding": "factorised"})
  params = nn.meta.unbox(encoder.init(jax.random.PRNGKey(0), _video(), train=False))["params"]
  pos = params["pos_embedding"]
  assert (pos["temporal"].shape, pos["spatial"].shape) == ((2, 16), (4, 16))


def test_assign_hand_computed():
  logits = jnp.log(jnp.array([[1.0, 3.0], [2.0, 2.0], [5.0, 0.5]]))
  soft, hard = grouping.assign(logits, hard=True)
  np.testing.assert_allclose(soft, [[0.25, 0.75], [0.5, 0.5], [5 / 5.5, 0.5 / 5.5]], rtol=1e-6)
  np.testing.assert_array_equal(hard, [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])


def _grouping_setup(hard, gumbel=True):
  block = grouping.GroupingBlock(mlp_dim=32, hard=hard, gumbel=gumbel)
  groups = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 16))
  tokens = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 16))
  params = nn.meta.unbox(block.init(jax.random.PRNGKey(2), groups, tokens, train=False))
  return block, params, groups, tokens


def test_hard_assignment_is_one_hot_with_straight_through_gradients():
  hard_block, params, groups, tokens = _grouping_setup(hard=True)
  soft_block = grouping.GroupingBlock(mlp_dim=32, hard=False)
  weights = jax.random.normal(jax.random.PRNGKey(5), (2, 10, 4))

  for train in (False, True):
    _, info = hard_block.apply(
      params, groups, tokens, train=train, rngs={"gumbel": jax.random.PRNGKey(7)}
    )
    a = np.asarray(info["assignment"])
    assert set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a.sum(-1), 1.0)

  def assignment_loss(block):
    def loss(p, x):
      _, info = block.apply(p, groups, x, train=False)
      return jnp.sum(info["assignment"] * weights)

    return jax.grad(loss, argnums=(0, 1))(params, tokens)

  # Straight-through: the hard assignment's gradient is the soft one's.
  hard_grads, soft_grads = assignment_loss(hard_block), assignment_loss(soft_block)
  for name in ("query", "key"):
    g = hard_grads[0]["params"][name]["kernel"]
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    np.testing.assert_allclose(g, soft_grads[0]["params"][name]["kernel"], rtol=1e-5, atol=1e-7)
  assert np.abs(hard_grads[1]).max() > 0
  np.testing.assert_allclose(hard_grads[1], soft_grads[1], rtol=1e-5, atol=1e-7)

  # Through the group update (train, Gumbel on), the logits get gradient.
  def group_loss(p, x):
    new_groups, _ = hard_block.apply(
      p, groups, x, train=True, rngs={"gumbel": jax.random.PRNGKey(7)}
    )
    return jnp.sum(jnp.sin(new_groups))

  p_grad, x_grad = jax.grad(group_loss, argnums=(0, 1))(params, tokens)
  q_grad = p_grad["params"]["query"]["kernel"]
  assert np.all(np.isfinite(q_grad)) and np.abs(q_grad).max() > 0
  assert np.all(np.isfinite(x_grad)) and np.abs(x_grad).max() > 0


def test_soft_assignment_is_noise_free_and_gumbel_changes_assignment():
  block, params, groups, tokens = _grouping_setup(hard=True)
  run = lambda seed: block.apply(
    params, groups, tokens, train=True, rngs={"gumbel": jax.random.PRNGKey(seed)}
  )[1]
  info_a, info_b = run(0), run(1)
  np.testing.assert_allclose(info_a["soft_assignment"].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(info_a["soft_assignment"], info_b["soft_assignment"])
  assert np.any(info_a["assignment"] != info_b["assignment"])
  # Without training there is no noise: hard = one_hot(argmax(soft)).
  _, info = block.apply(params, groups, tokens, train=False)
  np.testing.assert_array_equal(
    info["assignment"], jax.nn.one_hot(jnp.argmax(info["soft_assignment"], -1), 4)
  )


def test_group_update_is_mean_of_assigned_values():
  block, params, groups, tokens = _grouping_setup(hard=True)
  p = params["params"]
  new_groups, info = block.apply(params, groups, tokens, train=False)
  # Recompute by hand: v = Dense(LN(tokens)); group m moves by Dense_out of
  # sum of v over the n tokens assigned to it / (n + 1) (GroupViT's eps = 1),
  # then by MLP(LN(.)).
  x = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-6)
  x = x * p["ln_tokens"]["scale"] + p["ln_tokens"]["bias"]
  v = x @ p["value"]["kernel"] + p["value"]["bias"]
  a = np.asarray(info["assignment"])
  pooled = np.einsum("bnm,bnd->bmd", a, v) / (a.sum(1)[..., None] + 1.0)
  mid = groups + pooled @ p["out"]["kernel"] + p["out"]["bias"]
  y = nn.LayerNorm().apply({"params": p["ln_mlp"]}, mid)
  expected = mid + layers.MlpBlock(32).apply({"params": p["mlp"]}, y, train=False)
  np.testing.assert_allclose(new_groups, expected, rtol=1e-5, atol=1e-5)


def test_text_encoder_ignores_padding_and_handles_leading_dims():
  encoder = text_encoder.TextEncoder(**TEXT_KW)
  tokens, mask = _text(3, (B, K, LN))
  variables = encoder.init(jax.random.PRNGKey(0), tokens, mask, train=False)
  pooled, inter = encoder.apply(variables, tokens, mask, train=False)
  assert pooled.shape == (B, K, 16) and inter["tokens"].shape == (B, K, LN, 16)
  other = jnp.where(mask == 0, 7, tokens)  # Only padded ids change.
  assert np.any(other != tokens)
  np.testing.assert_allclose(
    encoder.apply(variables, other, mask, train=False)[0], pooled, rtol=1e-5, atol=1e-6
  )
  flat, _ = encoder.apply(
    variables, tokens.reshape(B * K, LN), mask.reshape(B * K, LN), train=False
  )
  np.testing.assert_allclose(flat.reshape(B, K, 16), pooled, rtol=1e-5, atol=1e-6)
  # A padded noun slot (all-zero mask) stays finite.
  empty, _ = encoder.apply(variables, tokens, jnp.zeros_like(mask), train=False)
  assert np.all(np.isfinite(empty))
  with pytest.raises(ValueError, match="max_len"):
    encoder.apply(variables, *_text(4, (B, 9)), train=False)


def test_l2_normalize_values_and_a_finite_gradient_at_zero():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(layers.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
  # The gradient through a norm at a zero vector is 0/0 = NaN; this form's is rsqrt(eps) I.
  grad = jax.grad(lambda v: layers.l2_normalize(v)[0])(jnp.zeros(2))
  np.testing.assert_allclose(grad, [1e6, 0.0], rtol=1e-5)


def test_one_text_call_equals_two(model_and_params):
  # Captions and nouns through one text-tower call give what two calls give: the embeddings
  # and every real token's state (padding differs only in masked keys, so only rounding may).
  model, variables = model_and_params
  args = (_video(), *_text(1, (B, L)), *_text(2, (B, K, LN)))
  one_call = svilm.SViLM(video=VIDEO_KW, text=TEXT_KW, embed_dim=8, text_one_call=True)
  one, one_inter = one_call.apply(variables, *args, train=False)
  two, two_inter = model.apply(variables, *args, train=False)
  for key in ("text_emb", "noun_emb"):
    np.testing.assert_allclose(one[key], two[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for key in ("text_tokens", "noun_tokens"):
    assert one_inter[key].shape == two_inter[key].shape
    np.testing.assert_allclose(one_inter[key], two_inter[key], rtol=1e-5, atol=1e-5, err_msg=key)
  assert not model.text_one_call  # two calls are the default (the faster here)


def test_query_chunked_attention_equals_full_attention():
  # 10 queries in chunks of 4 (the last one padded) give the full attention's outputs and
  # gradients, with and without a key-padding mask.
  from svilm.models import layers

  x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 8))
  mask = layers.padding_to_attention_mask(jnp.ones((2, 10), jnp.int32).at[:, -3:].set(0))
  full = layers.SelfAttention(num_heads=2)
  chunked = layers.SelfAttention(num_heads=2, query_chunk=4)
  params = full.init(jax.random.PRNGKey(1), x, train=False)
  for m in (None, mask):
    loss = lambda p, module, m=m: jnp.sum(module.apply(p, x, m, train=True) ** 2)
    np.testing.assert_allclose(
      chunked.apply(params, x, m, train=False), full.apply(params, x, m, train=False), atol=1e-6
    )
    for a, b in zip(
      jax.tree.leaves(jax.grad(loss)(params, chunked)),
      jax.tree.leaves(jax.grad(loss)(params, full)),
    ):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
