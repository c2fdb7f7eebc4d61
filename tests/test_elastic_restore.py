"""Elastic restarts: a checkpoint restores onto another mesh shape, and the input stream
resumes at the right place after the number of hosts changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svilm import checkpointing
from svilm import data_setup
from tests.conftest import prepare_and_setup


def _setup(config, devices):
  ctx, _, _ = prepare_and_setup(config, devices)
  return ctx


def _perturbed(state):
  # One add per leaf: per-leaf random draws made this a 30-second compile.
  return jax.tree.map(lambda x: x + 0.25 if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


@pytest.mark.parametrize(
  "source", [dict(data=4, fsdp=2), dict(data=4, model=2)], ids=["data4_fsdp2", "data4_model2"]
)
def test_checkpoint_from_a_4x2_mesh_restores_onto_8x1_and_one_device(tiny, tmp_path, source):
  tiny.mesh.update(source)
  ctx = _setup(tiny, jax.devices())
  config = ctx.config
  # Every float leaf moved off its initial value (Adam's moments are non-zero), on the
  # state's shardings: what a trained state holds, without compiling a train step.
  state = jax.jit(_perturbed, out_shardings=ctx.state_shardings)(ctx.init_state())
  sharded_leaves = [
    x
    for x in jax.tree.leaves(state)
    if len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
  ]
  assert sharded_leaves, "the source state should really be sharded"
  manager = checkpointing.make_manager(str(tmp_path), keep=1)
  checkpointing.save(manager, 1, state, data_setup.stream_meta(config, 1, 1))
  manager.wait_until_finished()
  saved = jax.device_get(state)

  for target, devices in (
    (dict(data=8, fsdp=1, model=1), jax.devices()),
    (dict(data=1, fsdp=1, model=1), jax.devices()[:1]),
  ):
    tiny.mesh.update(target)
    target = _setup(tiny, devices)
    target_shardings = target.state_shardings
    restored, meta = checkpointing.restore(manager, 1, target.abstract_state, target_shardings)
    assert meta["step"] == 1 and meta["examples"] == config.batch_size
    for (path, a), b, want in zip(
      jax.tree_util.tree_leaves_with_path(restored),
      jax.tree.leaves(saved),
      jax.tree.leaves(target_shardings),
    ):
      assert a.sharding == want, jax.tree_util.keystr(path)
      np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))
  manager.close()


def _meta(step, batch, hosts, split):
  return {"step": step, "examples": step * batch, "process_count": hosts, "host_split": split}


def test_stream_start_after_a_change_in_the_number_of_hosts(tiny):
  tiny.batch_size = 8
  # Same hosts: the host's own position (files) or the global one (stream).
  assert data_setup.stream_start(tiny, _meta(10, 8, 2, "files"), 2) == 40
  tiny.data.host_split = "stream"
  assert data_setup.stream_start(tiny, _meta(10, 8, 2, "stream"), 2) == 80
  # stream: exact whatever the hosts were and are.
  assert data_setup.stream_start(tiny, _meta(10, 8, 2, "stream"), 4) == 80
  assert data_setup.stream_start(tiny, _meta(10, 8, 1, "stream"), 1) == 80
  # files: each host skips its share of what was seen (the order changes; logged).
  tiny.data.host_split = "files"
  assert data_setup.stream_start(tiny, _meta(10, 8, 2, "files"), 4) == 20
  # A checkpoint from before `examples` existed recorded the per-host count only.
  assert data_setup.stream_start(tiny, {"step": 10, "examples_per_host": 40}, 2) == 40
  assert data_setup.stream_start(tiny, None, 2) == 0
  tiny.batch_size = 16
  with pytest.raises(ValueError, match="global batch of 8, this run uses 16"):
    data_setup.stream_start(tiny, _meta(10, 8, 2, "files"), 2)


def test_a_checkpoint_of_another_layout_fails_with_a_clear_error(tiny, tmp_path):
  ctx = _setup(tiny, jax.devices()[:1])
  config, state = ctx.config, ctx.init_state()
  manager = checkpointing.make_manager(str(tmp_path), keep=1)
  checkpointing.save(manager, 1, state, data_setup.stream_meta(config, 1, 1))
  manager.wait_until_finished()
  tiny.model.scan_layers = True
  scanned = _setup(tiny, jax.devices()[:1])
  with pytest.raises(ValueError, match="model.scan_layers"):
    checkpointing.restore(manager, 1, scanned.abstract_state, scanned.state_shardings)
  manager.close()
