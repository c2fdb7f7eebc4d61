"""Sharding strategies on 8 fake CPU devices: DP, FSDP and DP x TP equal one device.

Also: the global-negative losses see the whole batch, optimizer state is sharded like the
parameters, impossible meshes fail before compiling, and gradient accumulation and bf16.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from data_pipelines import input_pipeline
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm import sharding
from svilm.models import svilm as svilm_model
from svilm.tasks import pretrain
from svilm.trainers import train_step
from tests.conftest import prepare_and_setup

NUM_STEPS = 3


@pytest.fixture(scope="module")
def batches(shapesworld_cache):
  from tests.conftest import tiny_config

  ctx, sources, tokenizer = prepare_and_setup(tiny_config(shapesworld_cache))
  config = ctx.config
  ds = data_setup.make_dataset(
    config,
    sources.train_files[0],
    tokenizer,
    batch_size=config.batch_size,
    train=True,
    seed=config.seed,
  )
  it = input_pipeline.as_numpy(ds)
  return [next(it) for _ in range(NUM_STEPS)]


def train(config, devices, batches, init_params=None):
  """NUM_STEPS steps on a mesh over `devices` (from `init_params` in the model's layout, if
  given); returns (params, last metrics, shardings)."""
  ctx, _, _ = prepare_and_setup(config, devices)
  shardings = ctx.state_shardings
  state = ctx.init_state()
  if init_params is not None:
    state = jax.device_put(
      state.replace(params=init_params, opt_state=ctx.tx.init(init_params)), shardings
    )
  step = ctx.jit_train_step()
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, ctx.mesh))
  return jax.device_get(state.params), jax.device_get(metrics), shardings


@pytest.fixture(scope="module")
def single_device(shapesworld_cache, batches):
  from tests.conftest import tiny_config

  return train(tiny_config(shapesworld_cache), jax.devices()[:1], batches)


def _assert_same_training(result, reference):
  (params, metrics, _), (ref_params, ref_metrics, _) = result, reference
  for key in ("loss/total", "loss/contrast", "loss/temporal", "loss/grounding"):
    np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-4, err_msg=key)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def _spec(shardings, *path):
  node = shardings.params
  for key in path:
    node = node[key]
  return tuple(node.spec)


@pytest.mark.parametrize(
  "mesh",
  [
    dict(data=-1),  # data parallel
    dict(data=1, fsdp=-1),  # FSDP over all 8
    dict(data=2, fsdp=2, model=2),  # all three (FSDP x TP alone: the scanned test below)
  ],
  ids=["dp", "fsdp", "dp_x_fsdp_x_tp"],
)
def test_sharded_training_equals_single_device(tiny, batches, single_device, mesh):
  tiny.mesh.update(mesh)
  result = train(tiny, jax.devices(), batches)
  _assert_same_training(result, single_device)
  # The strategy really sharded what it should (else this test would prove nothing).
  shardings = result[2]
  fc1 = ("video_encoder", "block_1", "mlp", "fc1", "kernel")  # ('embed', 'mlp')
  query = ("video_encoder", "block_1", "attention", "query", "kernel")  # (embed, heads, kv)
  fsdp = "fsdp" if mesh.get("fsdp", 1) != 1 else None
  model = "model" if mesh.get("model", 1) != 1 else None
  assert _spec(shardings, *fc1) == (fsdp, model)
  assert _spec(shardings, *query) == (fsdp, model, None)
  # Adam's two moments of that kernel are sharded like it.
  name = "".join(f"['{key}']" for key in fc1)
  moments = [
    leaf.spec
    for path, leaf in jax.tree_util.tree_leaves_with_path(shardings.opt_state)
    if jax.tree_util.keystr(path).endswith(name)
  ]
  assert [tuple(spec) for spec in moments] == [(fsdp, model)] * 2


def test_scanned_rematerialised_fsdp_training_equals_the_plain_single_device_run(
  tiny, batches, single_device
):
  # Same initial weights in the scanned layout, then FSDP x TP with remat: the final weights,
  # converted back, must be those of the plain one-device run.
  plain_ctx, _, _ = prepare_and_setup(tiny.copy_and_resolve_references(), jax.devices()[:1])
  plain = plain_ctx.init_state().params
  tiny.model.scan_layers = True
  tiny.model.remat = "full"
  tiny.mesh.update(dict(data=1, fsdp=4, model=2))
  scanned_model = prepare_and_setup(tiny.copy_and_resolve_references())[0].model
  params, metrics, shardings = train(
    tiny, jax.devices(), batches, svilm_model.convert_layer_layout(plain, scanned_model)
  )
  # The stacked-layer axis is never split; the width is.
  assert _spec(shardings, "video_encoder", "blocks_2_2", "mlp", "fc1", "kernel") == (
    None,
    "fsdp",
    "model",
  )
  unscanned = svilm_model.convert_layer_layout(params, plain_ctx.model)
  _assert_same_training((unscanned, metrics, None), single_device)


def test_indivisible_dimensions_stay_replicated():
  mesh = jax.make_mesh((1, 2, 4), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = sharding.DEFAULT_RULES
  # 6 heads on a 4-way model axis stay whole, 8 heads are split; width 63 is not split in 2.
  assert sharding.spec_for(("embed", "heads", "kv"), (64, 6, 8), mesh, rules) == P(
    "fsdp", None, None
  )
  assert sharding.spec_for(("embed", "heads", "kv"), (63, 8, 8), mesh, rules) == P(
    None, "model", None
  )
  assert sharding.spec_for((), (), mesh, rules) == P()


def test_global_negative_losses_equal_single_device():
  # 16 clips over 8 devices: each device holds 2, but every row's negatives are all 16.
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  normalize = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  video = normalize(jax.random.normal(keys[0], (16, 8)))
  text = normalize(jax.random.normal(keys[1], (16, 8)))
  nouns = normalize(jax.random.normal(keys[2], (16, 2, 8)))
  groups = normalize(jax.random.normal(keys[3], (16, 4, 8)))
  valid = jnp.ones((16, 2), jnp.int32).at[3, 1].set(0)

  def both(video, text, nouns, groups, valid):
    contrast, _ = losses.contrastive_loss(video, text, 10.0)
    grounding, _ = losses.spatial_grounding_loss(nouns, valid, groups, 0.1, 10.0)
    return contrast, grounding

  mesh = jax.make_mesh((8, 1, 1), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  split = NamedSharding(mesh, P(sharding.BATCH_AXES))
  inputs = (video, text, nouns, groups, valid)
  sharded = jax.jit(both, in_shardings=(split,) * 5)(*inputs)
  single = jax.jit(both)(*jax.device_put(inputs, jax.devices()[0]))
  np.testing.assert_allclose(sharded, single, rtol=1e-6)
  # Had each device used only its own 2 clips as negatives, the contrastive loss would be the
  # mean of the per-pair losses, which is far smaller: the global batch is really seen.
  local = np.mean([both(*(x[i : i + 2] for x in inputs))[0] for i in range(0, 16, 2)])
  assert local < 0.5 * float(single[0])


def test_mesh_shape_rules_and_errors(tiny):
  assert sharding.mesh_shape(tiny, 8) == (8, 1, 1)
  tiny.mesh.update(dict(data=2, fsdp=-1, model=2))
  assert sharding.mesh_shape(tiny, 8) == (2, 2, 2)
  tiny.mesh.update(dict(data=-1, fsdp=-1, model=1))
  with pytest.raises(configuration.ConfigError, match="at most one may be -1"):
    configuration.finalize(tiny, num_devices=8, process_count=1, vocab_size=None)
  tiny.mesh.update(dict(data=3, fsdp=1, model=1))
  with pytest.raises(configuration.ConfigError, match="mesh.data=3.*has 3 devices but there are 8"):
    configuration.finalize(tiny, num_devices=8, process_count=1, vocab_size=None)
  # A tensor-parallel group may not span hosts: 2 hosts x 4 devices cannot hold model=8.
  tiny.mesh.update(dict(data=1, fsdp=1, model=8))
  with pytest.raises(configuration.ConfigError, match="mesh.model=8.*4 devices of each host"):
    configuration.finalize(tiny, num_devices=8, process_count=2, vocab_size=None)
  tiny.mesh.update(dict(data=-1, fsdp=1, model=1))
  tiny.optim.grad_accum_steps = 3
  with pytest.raises(configuration.ConfigError, match="grad_accum_steps=3"):
    configuration.finalize(tiny, num_devices=8, process_count=1, vocab_size=None)


def test_gradient_accumulation_is_the_mean_over_strided_micro_batches(tiny, batches):
  tiny.optim.grad_accum_steps = 2
  ctx, _, _ = prepare_and_setup(tiny, jax.devices()[:1])
  model, config = ctx.model, ctx.config
  params = ctx.init_state().params
  batch = {k: v for k, v in batches[0].items() if k != "index"}
  rng = jax.random.PRNGKey(7)
  metrics, grads = jax.jit(
    functools.partial(
      train_step.loss_and_grads, ctx.loss_fn, partition=ctx.partition, config=config
    )
  )(params, {}, batch, rng)
  # By hand: micro-batch i = rows i, i + 2, i + 4, ... with key fold_in(rng, i).
  grad_fn = jax.jit(
    jax.value_and_grad(
      functools.partial(pretrain.compute_losses, model=model, config=config), has_aux=True
    )
  )
  parts = [
    grad_fn(params, jax.tree.map(lambda x, i=i: x[i::2], batch), jax.random.fold_in(rng, i))
    for i in range(2)
  ]
  expected_loss = np.mean([float(total) for (total, _), _ in parts])
  np.testing.assert_allclose(metrics["loss/total"], expected_loss, rtol=1e-5)
  for a, b, c in zip(
    jax.tree.leaves(grads), jax.tree.leaves(parts[0][1]), jax.tree.leaves(parts[1][1])
  ):
    np.testing.assert_allclose(a, (b + c) / 2, rtol=1e-4, atol=1e-7)
  # Micro-batch negatives differ from whole-batch negatives: a different loss (documented).
  (whole, _), _ = grad_fn(params, batch, rng)
  assert abs(float(whole) - expected_loss) > 1e-3


def test_accumulation_on_8_devices_equals_single_device(tiny, batches):
  tiny.optim.grad_accum_steps = 2
  single = train(tiny, jax.devices()[:1], batches)
  tiny.mesh.update(dict(data=2, fsdp=2, model=2))  # micro-batches of 4 on 4 batch shards
  _assert_same_training(train(tiny, jax.devices(), batches), single)


def test_bfloat16_compute_trains_with_float32_params(tiny, batches, single_device):
  tiny.model.dtype = "bfloat16"
  params, metrics, _ = train(tiny, jax.devices(), batches)
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  ref_metrics = single_device[1]
  # bf16 has an 8-bit mantissa: the losses agree to about 1%, not to float32 precision.
  for key in ("loss/total", "loss/contrast", "loss/grounding"):
    np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=3e-2, err_msg=key)
