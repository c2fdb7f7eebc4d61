"""Two JAX processes on one machine (4 fake CPU devices each) train and evaluate together; one
process with 8 devices, on another mesh, continues their checkpoint to the same parameters and
evaluates their final checkpoint to the same results."""

import json
import os
import shutil
import socket
import subprocess

import jax
import numpy as np

from svilm import checkpointing
from svilm.trainers import trainer
from tests.conftest import REPO_ROOT
from tests.conftest import devices_env
from tests.conftest import main_command
from tests.conftest import prepare_and_setup


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# The tiny recipe (configs/pretrain.py:tiny: its ShapesWorld build is the session's) with the
# default global batch of 32, for 4 steps.
FLAGS = {"batch_size": 32, "total_steps": 4, "checkpoint_every_steps": 2}


def _config(cache):
  from configs import pretrain as pretrain_config

  config = pretrain_config.get_config("tiny")
  config.data.shapesworld_dir = cache
  config.update(FLAGS)
  return config


def _run(workdir, cache, *, processes: int, flags=()):
  """`svilm.main` on the tiny config over 8 fake devices split into `processes` processes."""
  port = _free_port()
  command = main_command(
    "--config=configs/pretrain.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={cache}",
    *(f"--config.{k}={v}" for k, v in FLAGS.items()),
    *flags,
  )
  if processes > 1:
    command += [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}"]
  running = [
    subprocess.Popen(
      command + ([f"--process_id={i}"] if processes > 1 else []),
      cwd=REPO_ROOT,
      env=devices_env(8 // processes),
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
  ctx, _, _ = prepare_and_setup(_config(cache), jax.devices()[:1])
  manager = checkpointing.make_manager(workdir, keep=3)
  state, _ = checkpointing.restore(manager, step, ctx.abstract_state, ctx.state_shardings)
  manager.close()
  return jax.device_get(state.params)


def _assert_same_params(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_two_processes_train_like_one_and_restart_elastically(shapesworld_cache, tmp_path):
  # Every host reads the same stream and keeps its half of each global batch, so the global
  # batches are those of one process; FSDP shards parameters across both processes. The last
  # evaluation batch is padded: 32 held-out clips in batches of 24.
  settings = {"data.host_split": "stream", "mesh.fsdp": 2, "eval.batch_size": 24}
  flags = tuple(f"--config.{key}={value}" for key, value in settings.items())
  two, elastic = tmp_path / "two", tmp_path / "elastic"
  outputs = _run(two, shapesworld_cache, processes=2, flags=flags)
  assert "8 device(s), process 0 of 2" in outputs[0].replace("cpu ", "")
  assert "8 devices in a {'data': 4, 'fsdp': 2, 'model': 1} mesh, global batch 32" in outputs[1]
  with open(two / "eval_results.json") as f:  # written once, by process 0
    results = json.load(f)
  assert results["step"] == 4 and results["retrieval/num_clips"] > 24
  steps = sorted(int(d) for d in os.listdir(two / "checkpoints") if d.isdigit())
  assert steps == [2, 4]

  # Elastic restart: the 2-process step-2 checkpoint, resumed by one process on a different
  # mesh (8-way data parallel), takes steps 3 and 4 to where the two processes took them.
  shutil.copytree(two / "checkpoints" / "2", elastic / "checkpoints" / "2")
  outputs = _run(
    elastic,
    shapesworld_cache,
    processes=1,
    flags=("--config.data.host_split=stream", "--config.mesh.fsdp=1"),
  )
  assert "Resumed from checkpoint at step 2" in outputs[0]
  _assert_same_params(
    _params(str(elastic), shapesworld_cache, 4), _params(str(two), shapesworld_cache, 4)
  )

  # Evaluation is a function of the checkpoint and the data alone: the 2-process run's final
  # checkpoint, evaluated again by this process (1 x 8 devices, the same config and trainer as
  # `svilm.main`), gives its eval_results.json to the bit.
  shutil.copytree(two / "checkpoints" / "4", tmp_path / "eval_one" / "checkpoints" / "4")
  config = _config(shapesworld_cache)
  config.update_from_flattened_dict(settings)
  assert trainer.train_and_evaluate(config, str(tmp_path / "eval_one")) == results
