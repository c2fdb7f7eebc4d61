"""Config checks and derived values: the one place both happen, before anything compiles.

`finalize(config, ...)` fills values derived from other facts (the tokenizer's vocabulary, the
number of temporal positions) and rejects impossible combinations with a message that names the
key, so a wrong setting fails in a second at start-up instead of after compilation or data
loading. Unknown keys are already rejected by the locked ConfigDict (see svilm/main.py).
"""

from __future__ import annotations

import math

import ml_collections

from svilm import sharding
from svilm.models import layers

# Compute dtypes (parameters and optimizer state stay float32 under either).
COMPUTE_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and, where it can, the fix.
  `svilm.main` prints it as one FATAL line without a traceback (--verbose shows it)."""


def require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _nearest(key: str, value: int, step: int) -> str:
  """The fix for `key=value` that must be a multiple of `step`: the multiples either side."""
  low = value // step * step
  options = [v for v in (low, low + step) if v > 0]
  return f"; use --config.{key}=" + " or ".join(str(v) for v in options)


def num_temporal_positions(config: ml_collections.ConfigDict) -> int:
  """N_t: temporal token positions of a clip (frames / tubelet temporal size)."""
  return config.data.num_frames // config.model.video.patch_size[0]


def finalize(
  config: ml_collections.ConfigDict, *, num_devices: int, process_count: int, vocab_size: int | None
) -> ml_collections.ConfigDict:
  """Validates `config` and returns a copy with derived values filled in (and locked).

  The generic keys (steps, batch, mesh, optimizer, checkpoints, evaluation batch) are checked
  here; the task named by `config.task` checks its own keys (`Task.validate_config`). With
  vocab_size=None (before the tokenizer is known) the vocabulary checks are skipped, so the
  trainer can reject a bad config before it builds or reads any data.
  """
  # The registry imports task modules that import this one.
  from svilm import tasks
  from svilm.tasks import base

  config = ml_collections.ConfigDict(config.to_dict())  # never mutate the caller's config
  try:
    task = tasks.get(config.task)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  require(
    config.total_steps >= 0,
    f"total_steps must be >= 0 (0: evaluate the initial weights), got {config.total_steps}",
  )
  require(config.batch_size > 0, f"batch_size must be > 0, got {config.batch_size}")
  for key in ("log_every_steps", "checkpoint_every_steps"):
    require(config[key] > 0, f"{key} must be > 0, got {config[key]}")
  require(config.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")

  try:
    mesh = sharding.mesh_shape(config, num_devices)
    sharding.check_mesh_fits_hosts(mesh, num_devices, process_count)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  shards = mesh[0] * mesh[1]  # the batch is split over data x fsdp
  accum = config.optim.grad_accum_steps
  require(accum >= 1, f"optim.grad_accum_steps must be >= 1, got {accum}")
  micro = f"optim.grad_accum_steps={accum} micro-batches x " if accum > 1 else ""
  require(
    config.batch_size % (shards * accum) == 0,
    f"batch_size={config.batch_size} is not divisible by {micro}the {shards} batch "
    "shards (mesh.data x mesh.fsdp)" + _nearest("batch_size", config.batch_size, shards * accum),
  )
  require(
    config.batch_size % process_count == 0,
    f"batch_size={config.batch_size} is not divisible by {process_count} hosts"
    + _nearest("batch_size", config.batch_size, process_count),
  )
  eval_step = math.lcm(shards, process_count)
  require(
    config.eval.batch_size % eval_step == 0,
    f"eval.batch_size={config.eval.batch_size} is not divisible by the {shards} batch "
    f"shards (mesh.data x mesh.fsdp) and the {process_count} hosts"
    + _nearest("eval.batch_size", config.eval.batch_size, eval_step),
  )
  model = config.model
  require(
    model.dtype in COMPUTE_DTYPES,
    f"model.dtype={model.dtype!r} is not one of {sorted(COMPUTE_DTYPES)}",
  )
  require(
    model.remat in layers.REMAT_POLICIES,
    f"model.remat={model.remat!r} is not one of {sorted(layers.REMAT_POLICIES)}",
  )
  task.validate_config(config, vocab_size)
  base.validate_evals(config, task)
  config.lock()
  return config
