"""Orbax checkpoints: one directory per step under WORKDIR/checkpoints.

A checkpoint holds the whole train state (params, optimizer state, step, base RNG) as `state`
and a small JSON `meta` item (step, examples consumed per host, schema of the input stream), so
a resumed run restores exactly where the previous one stopped. The input position is derived
from the step (see data_pipelines/input_pipeline.py), and `meta` records it so a mismatch is
caught instead of silently changing the data order.

`load_params` reads only the parameters of any such checkpoint (for `config.init_from`:
finetuning starts from another run's weights, whatever its optimizer and mesh were).

Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from svilm import sharding


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")


def make_manager(
  workdir: str, *, keep: int, async_save: bool = True, timeout_secs: int = 600
) -> ocp.CheckpointManager:
  """The manager for WORKDIR/checkpoints, keeping the newest `keep` steps.

  With `async_save` a save copies the state off the devices and writes it in a background
  thread while training continues; the next save, and the end of training, wait for it (at
  most `timeout_secs`, which also bounds the hosts' commit barrier on several processes).
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=True,
    enable_async_checkpointing=async_save,
    async_options=ocp.AsyncOptions(timeout_secs=timeout_secs),
  )
  return ocp.CheckpointManager(
    checkpoint_dir(workdir), options=options, item_names=("state", "meta")
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  """Saves `state` and `meta` at `step` (asynchronously; the manager waits before the next)."""
  manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    force=True,
  )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, shardings: Any):
  """Restores (state, meta) at `step` with the shapes of `abstract_state` onto `shardings`.

  Each host reads only the pieces its devices hold, so a checkpoint written on any mesh shape
  and any number of hosts restores onto the current ones (elastic restart).
  """
  abstract_state = sharding.with_shardings(abstract_state, shardings)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
      f"Checkpoint {step} in {manager.directory} does not fit this run's train state: the "
      "model or optimizer config changed since it was written (e.g. model.scan_layers, "
      "which changes the parameter layout, a width or depth, or optim.grad_clip_norm). "
      "Resume with the config it was written with, or start in a new workdir. Orbax said: "
      f"{e}"
    ) from e
  return restored["state"], restored["meta"]


def _is_step_dir(path: str) -> bool:
  return os.path.basename(os.path.normpath(path)).isdigit() and os.path.isdir(
    os.path.join(path, "state")
  )


def resolve_step_dir(path: str) -> str:
  """The checkpoint directory `config.init_from` names: PATH itself when it is one step's
  directory (WORKDIR/checkpoints/<step>), else the newest step under PATH (a checkpoints
  directory) or under PATH/checkpoints (a workdir). Unfinished (temporary) saves never count.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"config.init_from={path!r} does not exist (give a workdir, its "
      "checkpoints/ directory, or one step's directory)"
    )
  if _is_step_dir(path):
    return path
  for root in (path, os.path.join(path, "checkpoints")):
    steps = (
      [int(d) for d in os.listdir(root) if _is_step_dir(os.path.join(root, d))]
      if (os.path.isdir(root))
      else []
    )
    if steps:
      return os.path.join(root, str(max(steps)))
  raise FileNotFoundError(
    f"config.init_from={path!r} holds no checkpoint: expected a "
    "workdir with checkpoints/<step>/, a checkpoints directory, or a "
    "step directory"
  )


def load_params(path: str) -> tuple[dict, dict]:
  """(params, meta) of the checkpoint `path` names (see resolve_step_dir), on the host.

  Only the parameters are read: nothing about the writer's optimizer (or mesh) needs to be
  known, and the optimizer state is never loaded. Arrays come back as numpy arrays whatever
  mesh wrote them; `meta` is the checkpoint's JSON meta item plus "step" and "path".
  """
  step_dir = resolve_step_dir(path)
  state_dir = os.path.join(step_dir, "state")
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    tree = checkpointer.metadata(state_dir).item_metadata.tree
    params_meta = tree["params"]
    restored = checkpointer.restore(
      state_dir,
      args=ocp.args.PyTreeRestore(
        item={"params": jax.tree.map(lambda _: 0, params_meta)},
        restore_args={
          "params": jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
        },
        partial_restore=True,
      ),
    )
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    raise ValueError(f"Cannot read the parameters of checkpoint {step_dir}: {e}") from e
  meta = {}
  meta_file = os.path.join(step_dir, "meta", "metadata")
  if os.path.exists(meta_file):
    with open(meta_file) as f:
      meta = json.load(f)
  meta.update(step=int(os.path.basename(step_dir)), path=step_dir)
  return restored["params"], meta
