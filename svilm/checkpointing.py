"""Orbax checkpoints: one directory per step under WORKDIR/checkpoints.

A checkpoint holds the whole train state (params, optimizer state, step, base RNG) as `state`
and a small JSON `meta` item (step, examples consumed per host, schema of the input stream), so
a resumed run restores exactly where the previous one stopped. The input position is derived
from the step (see data_pipelines/input_pipeline.py), and `meta` records it so a mismatch is
caught instead of silently changing the data order.

Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """The manager for WORKDIR/checkpoints, keeping the newest `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  """Saves `state` and `meta` at `step` (asynchronously; the manager waits before the next)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any):
  """Restores (state, meta) at `step` onto the shardings of `abstract_state`."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored["state"], restored["meta"]
