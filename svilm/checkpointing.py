"""Orbax checkpoints: one directory per step under WORKDIR/checkpoints.

A checkpoint holds the whole train state (params, optimizer state, step, base RNG) as `state`
and a small JSON `meta` item (step, examples consumed per host, schema of the input stream), so
a resumed run restores exactly where the previous one stopped. The input position is derived
from the step (see data_pipelines/input_pipeline.py), and `meta` records it so a mismatch is
caught instead of silently changing the data order.

`load_params` reads only the parameters of any such checkpoint (for `config.init_from`:
finetuning starts from another run's weights, whatever its optimizer and mesh were).

Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) leaves the previous checkpoint as the latest valid one. A complete
checkpoint can still go bad on disk later (a flipped bit, a truncated or deleted file):
`restore_newest_readable` moves such a step aside to `checkpoints/corrupt-<step>`, says so, and
resumes from the newest one that reads. A checkpoint that reads but does not fit this run's train
state is a config mistake instead (a ConfigError), and is never moved.
"""

from __future__ import annotations

import errno
import json
import logging as std_logging
import os
import sys
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from svilm import configuration
from svilm import paths
from svilm import sharding

# TensorStore raises every error as a ValueError whose message starts with the absl status code.
# These codes mean the files are bad (measured on orbax-checkpoint 0.12.8 by damaging a saved
# step): DATA_LOSS, a corrupt OCDBT manifest or b-tree node; FAILED_PRECONDITION, a zstd stream
# that does not decode (bytes flipped in a chunk's header, a deleted data file); OUT_OF_RANGE, a
# truncated data file; NOT_FOUND, a missing manifest. Transient codes (UNAVAILABLE,
# DEADLINE_EXCEEDED: a network hiccup, a barrier timeout) and INVALID_ARGUMENT are left out on
# purpose: they must never get a good checkpoint moved aside.
_UNREADABLE_STATUS = ("DATA_LOSS", "FAILED_PRECONDITION", "OUT_OF_RANGE", "NOT_FOUND")
# Where unreadable steps go: never parsed as a step by Orbax (it reads `<digits>` and
# `<name>_<digits>`), so it is neither restored nor counted against keep_checkpoints.
CORRUPT_PREFIX = "corrupt-"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(paths.resolve(workdir), "checkpoints")


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


class UnreadableCheckpointError(Exception):
  """A checkpoint whose files cannot be read (corrupt, truncated or missing), as opposed to
  one that reads but does not fit this run's train state (a ConfigError)."""

  def __init__(self, step: int, path: str, cause: str):
    super().__init__(f"Checkpoint {step} ({path}) cannot be read: {cause}")
    self.step, self.path, self.cause = step, path, cause


def _chain(error: BaseException):
  """`error` and the exceptions it was raised from or during, each once."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _one_line(message: str, limit: int = 400) -> str:
  # TensorStore appends its whole JSON spec in brackets: the cause is what comes before it.
  message = message.split(" [tensorstore_spec", 1)[0]
  message = " ".join(message.split())
  return message if len(message) <= limit else message[: limit - 3] + "..."


def _is_missing_or_io(error: BaseException) -> bool:
  # Not every OSError: a permission or a network timeout says nothing about the files.
  return isinstance(error, (FileNotFoundError, NotADirectoryError)) or (
    type(error) is OSError and error.errno == errno.EIO
  )


def unreadable_cause(error: BaseException) -> str | None:
  """The one-line cause when `error` (or one it chains) says that checkpoint files cannot be
  read, else None (the checkpoint reads but does not fit, or the failure is not the files').

  What Orbax 0.12 and TensorStore raise for damaged files: a status-coded ValueError (see
  _UNREADABLE_STATUS), for array reads wrapped by Orbax in a bare `Exception("Encountered error
  while reading array index ...")`; a JSONDecodeError or UnicodeDecodeError for a corrupt
  metadata file (state/_METADATA, array_metadatas, meta); a KeyError `Item "meta" was not found
  in the checkpoint` for a missing item directory; FileNotFoundError and EIO from the OS.
  Orbax's own ValueErrors for a tree or shape that differs (`tree structures do not match`,
  `Requested shape ... is not compatible`) are not among them: those mean the config changed.
  """
  for e in _chain(error):
    message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, ValueError) and message.startswith(tuple(s + ":" for s in _UNREADABLE_STATUS)):
      return _one_line(message)
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) or _is_missing_or_io(e):
      return _one_line(f"{type(e).__name__}: {message}")
    if isinstance(e, KeyError) and "was not found in the checkpoint" in message:
      return _one_line(message)
  return None


def _is_restore_noise(error: BaseException | None, tb=None) -> bool:
  """Whether `error` is fallout of a failed Orbax restore rather than news: the reads still in
  flight when Orbax gave up fail too, or find their event loop closed."""
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True
  if error is None:
    return False
  if unreadable_cause(error) is not None:
    return True
  tb = tb or error.__traceback__
  while tb is not None:
    if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


class _DropRestoreNoise(std_logging.Filter):
  def filter(self, record):
    # asyncio logs "Future/Task exception was never retrieved" for each read Orbax abandoned.
    never_retrieved = "exception was never retrieved" in str(record.msg)
    return not (never_retrieved and record.exc_info and _is_restore_noise(record.exc_info[1]))


def _quiet_failed_restores() -> None:
  """Keeps a failed restore to the one error it raises (idempotent, process-wide).

  When one read fails, Orbax stops waiting for the others and closes its event loop; each
  TensorStore read still in flight then reports "Event loop is closed" as an unraisable
  exception with a traceback, and asyncio logs every abandoned future: hundreds of lines that
  bury the cause. Only that fallout is dropped; other unraisable exceptions and asyncio errors
  pass through unchanged."""
  if getattr(sys.unraisablehook, "_svilm_quiet", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_restore_noise(unraisable.exc_value, unraisable.exc_traceback):
      previous(unraisable)

  hook._svilm_quiet = True
  sys.unraisablehook = hook
  asyncio_logger = std_logging.getLogger("asyncio")
  if not any(isinstance(f, _DropRestoreNoise) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropRestoreNoise())


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, shardings: Any):
  """Restores (state, meta) at `step` with the shapes of `abstract_state` onto `shardings`.

  Each host reads only the pieces its devices hold, so a checkpoint written on any mesh shape
  and any number of hosts restores onto the current ones (elastic restart).

  Raises UnreadableCheckpointError when the step's files cannot be read (see unreadable_cause),
  and a ConfigError when they read but do not fit `abstract_state` (the config changed).
  """
  step_dir = os.path.join(str(manager.directory), str(step))
  # Without its tree metadata Orbax misreports a checkpoint as one of another layout.
  if not tf.io.gfile.exists(os.path.join(step_dir, "state", "_METADATA")):
    raise UnreadableCheckpointError(step, step_dir, "state/_METADATA is missing")
  abstract_state = sharding.with_shardings(abstract_state, shardings)
  _quiet_failed_restores()
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
  except Exception as e:
    cause = unreadable_cause(e)
    if cause is not None:
      raise UnreadableCheckpointError(step, step_dir, cause) from e
    if not isinstance(e, (ValueError, KeyError, TypeError)):
      raise
    raise configuration.ConfigError(
      f"Checkpoint {step} in {manager.directory} does not fit this run's train state: the "
      "model or optimizer config changed since it was written (e.g. model.scan_layers, "
      "which changes the parameter layout, a width or depth, or optim.grad_clip_norm). "
      "Resume with the config it was written with, or start in a new workdir. Orbax said: "
      f"{_one_line(str(e), 600)}"
    ) from e
  return restored["state"], restored["meta"]


def _aside_path(directory: str, step: int) -> str:
  """WORKDIR/checkpoints/corrupt-<step>, or corrupt-<step>.<n> when that is taken already."""
  path, n = os.path.join(directory, f"{CORRUPT_PREFIX}{step}"), 1
  while tf.io.gfile.exists(path):
    path, n = os.path.join(directory, f"{CORRUPT_PREFIX}{step}.{n}"), n + 1
  return path


def _any_process(flag: bool) -> bool:
  """Whether `flag` holds on any process (every process must call this, in the same order)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def restore_newest_readable(
  manager: ocp.CheckpointManager, abstract_state: Any, shardings: Any
) -> tuple[Any, dict, int] | None:
  """(state, meta, step) of the newest checkpoint in the manager's directory that can be read,
  or None when it holds none at all (a fresh run).

  A step that cannot be read (see unreadable_cause) is moved aside to `corrupt-<step>`, where
  Orbax no longer lists it (nor counts it against keep_checkpoints), with a warning naming the
  step, the new path and the cause; then the next newest is tried. A step that reads but does
  not fit is a ConfigError and stays where it is: the config is what is wrong. When none can be
  read, or an earlier run moved them all aside, it is a ConfigError too: a run never restarts
  from scratch on its own in a workdir that had checkpoints.

  Several processes: every process tries the same step; if any of them could not read it, all
  agree it is unreadable (an allgather), process 0 moves it, and all wait for the move
  (sync_global_devices) before re-listing the directory. A step only some processes fail to read
  (a damaged shard that only they hold) never gets that far: the others wait at Orbax's own
  restore barrier (after the reads) until it times out (300 s), and the run ends with that
  error instead of resuming from different steps. Not tested: it needs a shard-level fault.
  """
  directory = str(manager.directory)
  moved = []  # (step, where it was moved)
  while (step := manager.latest_step()) is not None:
    aside = _aside_path(directory, step)  # before process 0 can rename anything
    try:
      state, meta = restore(manager, step, abstract_state, shardings)
      error = None
    except UnreadableCheckpointError as e:
      error = e
    if not _any_process(error is not None):
      return state, meta, step
    cause = error.cause if error else "another process could not read it"
    if jax.process_index() == 0:
      tf.io.gfile.rename(os.path.join(directory, str(step)), aside)
    logging.warning(
      "Checkpoint at step %d cannot be read; moved it to %s and trying the next older one. "
      "Cause: %s",
      step,
      aside,
      cause,
    )
    moved.append((step, aside))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"svilm: checkpoint {step} moved aside")
    manager.reload()
  earlier = sorted(
    os.path.join(directory, d)
    for d in _listdir(directory)
    if d.startswith(CORRUPT_PREFIX) and tf.io.gfile.isdir(os.path.join(directory, d))
  )
  if not moved and not earlier:
    return None
  if moved:
    what = (
      f"step{'s' * (len(moved) > 1)} {', '.join(str(m[0]) for m in moved)} could not be read "
      f"and {'were' if len(moved) > 1 else 'was'} moved to {', '.join(m[1] for m in moved)} "
      "(the warnings above give each cause)"
    )
  else:
    what = f"an earlier run moved the unreadable ones aside ({', '.join(earlier)})"
  raise configuration.ConfigError(
    f"No checkpoint in {directory} can be read, so the run cannot resume: {what}. Training "
    "did not start from scratch. To start over, use a new --workdir, or delete "
    f"{os.path.join(directory, CORRUPT_PREFIX + '*')} to train from scratch in this one; to "
    f"resume, put a good copy of a checkpoint back as {os.path.join(directory, '<step>')}"
  )


def _listdir(directory: str) -> list[str]:
  """Entry names of `directory` (no trailing '/', which gfile adds to a bucket's
  subdirectories), or [] when it does not exist."""
  if not tf.io.gfile.isdir(directory):
    return []
  return [name.rstrip("/") for name in tf.io.gfile.listdir(directory)]


def _is_step_dir(path: str) -> bool:
  return os.path.basename(path.rstrip("/")).isdigit() and tf.io.gfile.isdir(
    os.path.join(path, "state")
  )


def resolve_step_dir(path: str) -> str:
  """The checkpoint directory `config.init_from` names: PATH itself when it is one step's
  directory (WORKDIR/checkpoints/<step>), else the newest step under PATH (a checkpoints
  directory) or under PATH/checkpoints (a workdir). Unfinished (temporary) saves never count.
  """
  path = paths.resolve(path)
  if not tf.io.gfile.isdir(path):
    raise FileNotFoundError(
      f"config.init_from={path!r} does not exist (give a workdir, its "
      "checkpoints/ directory, or one step's directory)"
    )
  if _is_step_dir(path):
    return path
  for root in (path, os.path.join(path, "checkpoints")):
    steps = [int(d) for d in _listdir(root) if _is_step_dir(os.path.join(root, d))]
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
  if tf.io.gfile.exists(meta_file):
    meta = paths.read_json(meta_file)
  meta.update(step=int(os.path.basename(step_dir.rstrip("/"))), path=step_dir)
  return restored["params"], meta
