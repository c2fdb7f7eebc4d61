"""Two JAX processes on one machine (4 fake CPU devices each) train and evaluate together,
and end with the same parameters as one process with 8 devices."""

import json
import os
import shutil
import socket
import subprocess

import jax
import numpy as np

from svilm import checkpointing
from tests.conftest import REPO_ROOT
from tests.conftest import main_command
from tests.conftest import prepare_and_setup


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# The default recipe (configs/pretrain.py: 4-layer video and 2-layer text towers, batch 32) on
# the session's small ShapesWorld build (these are the tiny variant's dataset settings, so the
# cached build is reused) for 4 steps.
DEFAULT_ON_SMALL_DATA = {
  "data.shapesworld.num_train": 64,
  "data.shapesworld.num_val": 32,
  "data.shapesworld.num_compositional": 8,
  "data.shapesworld.num_shards_train": 2,
  "total_steps": 4,
  "checkpoint_every_steps": 2,
  "eval.batch_size": 16,
}


def _default_config(cache):
  from configs import pretrain as pretrain_config

  config = pretrain_config.get_config()
  config.data.shapesworld_dir = cache
  for key, value in DEFAULT_ON_SMALL_DATA.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _run(workdir, cache, *, processes: int, flags=()):
  """`svilm.main` on the default config over 8 fake devices split into `processes` processes."""
  port = _free_port()
  devices = 8 // processes
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  command = main_command(
    "--config=configs/pretrain.py",
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={cache}",
    *(f"--config.{k}={v}" for k, v in DEFAULT_ON_SMALL_DATA.items()),
    *flags,
  )
  if processes > 1:
    command += [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}"]
  running = [
    subprocess.Popen(
      command + ([f"--process_id={i}"] if processes > 1 else []),
      cwd=REPO_ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(processes)
  ]
  outputs = [p.communicate(timeout=600)[0] for p in running]
  for p, out in zip(running, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def _params(workdir, cache, step):
  """The parameters of checkpoint `step` in `workdir`, restored onto one device."""
  ctx, _, _ = prepare_and_setup(_default_config(cache), jax.devices()[:1])
  manager = checkpointing.make_manager(workdir, keep=3)
  state, _ = checkpointing.restore(manager, step, ctx.abstract_state, ctx.state_shardings)
  manager.close()
  return jax.device_get(state.params)


def _assert_same_params(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_two_processes_train_like_one_and_restart_elastically(shapesworld_cache, tmp_path):
  # Every host reads the same stream and keeps its half of each global batch, so the global
  # batches are those of one process; FSDP shards parameters across both processes.
  flags = ("--config.data.host_split=stream", "--config.mesh.fsdp=2")
  two, one, elastic = tmp_path / "two", tmp_path / "one", tmp_path / "elastic"
  outputs = _run(two, shapesworld_cache, processes=2, flags=flags)
  assert "8 device(s), process 0 of 2" in outputs[0].replace("cpu ", "")
  assert "8 devices in a {'data': 4, 'fsdp': 2, 'model': 1} mesh, global batch 32" in outputs[1]
  with open(two / "eval_results.json") as f:  # written once, by process 0
    results = json.load(f)
  assert results["step"] == 4 and results["retrieval/num_clips"] > 0
  steps = sorted(int(d) for d in os.listdir(two / "checkpoints") if d.isdigit())
  assert steps == [2, 4]

  _run(one, shapesworld_cache, processes=1, flags=flags)
  reference = _params(str(one), shapesworld_cache, 4)
  _assert_same_params(_params(str(two), shapesworld_cache, 4), reference)

  # Elastic restart: the 2-process step-2 checkpoint resumed by one process on a different
  # mesh (8-way data parallel) ends where the uninterrupted runs end.
  shutil.copytree(two / "checkpoints" / "2", elastic / "checkpoints" / "2")
  outputs = _run(
    elastic,
    shapesworld_cache,
    processes=1,
    flags=("--config.data.host_split=stream", "--config.mesh.fsdp=1"),
  )
  assert "Resumed from checkpoint at step 2" in outputs[0]
  _assert_same_params(_params(str(elastic), shapesworld_cache, 4), reference)

  # Evaluation is a function of the checkpoint and the data alone: the step-4 checkpoint,
  # evaluated by 1 process x 8 devices and by 2 processes x 4 devices (with a padded last
  # batch: 32 held-out clips in batches of 24), gives the same eval_results.json, to the bit.
  results = []
  for name, processes in (("eval_one", 1), ("eval_two", 2)):
    shutil.copytree(two / "checkpoints" / "4", tmp_path / name / "checkpoints" / "4")
    _run(
      tmp_path / name,
      shapesworld_cache,
      processes=processes,
      flags=("--config.mesh.fsdp=2", "--config.eval.batch_size=24"),
    )
    with open(tmp_path / name / "eval_results.json") as f:
      results.append(json.load(f))
  assert results[0] == results[1]
  assert results[0]["retrieval/num_clips"] > 24 and results[0]["step"] == 4
