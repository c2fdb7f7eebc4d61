"""The generic train step: optimizer, frozen parameters, micro-batching and the jitted update.

Every task's step is this one; the task only supplies `loss_fn(params, batch, rng, *, model,
config) -> (loss, metrics)`. Randomness is a pure function of (config.seed, step): the step's
key is `fold_in(state.rng, state.step)` and micro-batch i uses `fold_in(key, i)`.

Frozen parameters (`config.optim.freeze`): the optimizer sees only the trainable subtree, so
frozen parameters have no optimizer state, and the loss is differentiated with respect to the
trainable subtree only, so no gradient is computed for them (a linear probe's backward pass
stops at its head).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from svilm import sharding


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint holds. `rng` is the base key; it never advances. `opt_state` is
  the optimizer state of the trainable parameters only."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf; nothing after the last good checkpoint was saved."""


def make_optimizer(config: ml_collections.ConfigDict):
  """AdamW with linear warmup and cosine decay; weight decay on matrices only."""
  optim = config.optim
  total = max(config.total_steps, 1)  # total_steps=0 (evaluate only) still builds a schedule
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=optim.learning_rate,
    warmup_steps=min(optim.warmup_steps, total - 1),
    decay_steps=total,
    end_value=optim.learning_rate * optim.end_learning_rate_ratio,
  )
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.adamw(
    schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay, mask=decay_mask
  )
  if optim.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
  return tx, schedule


def freeze_patterns(config: ml_collections.ConfigDict) -> list[str]:
  """The regular expressions of `config.optim.freeze` (comma separated)."""
  return [p.strip() for p in config.optim.freeze.split(",") if p.strip()]


def frozen_paths(params: Any, patterns: list[str]) -> set[tuple[str, ...]]:
  """Leaf paths of `params` frozen by `patterns`.

  A pattern freezes every parameter whose "/"-joined path, or any prefix of it, it matches
  in full: "video_encoder" freezes the whole video tower, "video_encoder/block_.*" its
  blocks. A pattern that matches nothing is an error naming it (a typo would otherwise train
  what was meant to be frozen).
  """
  flat = traverse_util.flatten_dict(params)
  compiled = [(p, re.compile(p)) for p in patterns]
  frozen, used = set(), set()
  for path in flat:
    prefixes = ["/".join(path[:i]) for i in range(1, len(path) + 1)]
    for pattern, regex in compiled:
      if any(regex.fullmatch(prefix) for prefix in prefixes):
        frozen.add(path)
        used.add(pattern)
  unused = [p for p, _ in compiled if p not in used]
  if unused:
    top = sorted({path[0] for path in flat})
    raise ValueError(
      f"optim.freeze pattern(s) {unused} match no parameter; top-level parameters: {top}"
    )
  return frozen


class Partition:
  """Splits params into (trainable, frozen) nested dicts and merges them back.

  With nothing frozen both directions are the identity on the same tree, so an unfrozen run
  traces exactly the computation it always did.
  """

  def __init__(self, frozen: set[tuple[str, ...]]):
    self.frozen = frozenset(frozen)

  def split(self, params: Any) -> tuple[Any, Any]:
    if not self.frozen:
      return params, {}
    flat = traverse_util.flatten_dict(params)
    trainable = {k: v for k, v in flat.items() if k not in self.frozen}
    frozen = {k: v for k, v in flat.items() if k in self.frozen}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)

  def merge(self, trainable: Any, frozen: Any) -> Any:
    if not self.frozen:
      return trainable
    flat = {**traverse_util.flatten_dict(frozen), **traverse_util.flatten_dict(trainable)}
    return traverse_util.unflatten_dict(flat)


def _micro_batches(batch: dict, num: int, mesh) -> dict:
  """[B, ...] -> [num, B / num, ...]: micro-batch i holds rows i, i + num, i + 2 num, ...

  Strided rather than contiguous rows, so that each micro-batch is spread over every device
  exactly as the full batch is (the data-parallel split stays local: no resharding).
  """

  def split(x):
    x = x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
    if mesh is None:
      return x
    return jax.lax.with_sharding_constraint(
      x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXES))
    )

  return jax.tree.map(split, batch)


def loss_and_grads(
  loss_fn: Callable, trainable, frozen, batch, rng, *, partition: Partition, config, mesh=None
):
  """(metrics, grads of the trainable params): one pass, or the mean over
  optim.grad_accum_steps micro-batches (micro-batch i uses key fold_in(rng, i))."""

  def loss_of_trainable(trainable, batch, rng):
    return loss_fn(partition.merge(trainable, frozen), batch, rng)

  grad_fn = jax.value_and_grad(loss_of_trainable, has_aux=True)
  num = config.optim.grad_accum_steps
  if num == 1:
    (_, metrics), grads = grad_fn(trainable, batch, rng)
    return metrics, grads

  def accumulate(total, inputs):
    i, micro = inputs
    (_, metrics), grads = grad_fn(trainable, micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, total, (metrics, grads)), None

  micro = _micro_batches(batch, num, mesh)
  first = jax.tree.map(lambda x: x[0], micro)
  (_, metrics_shape), grads_shape = jax.eval_shape(lambda: grad_fn(trainable, first, rng))
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), (metrics_shape, grads_shape))
  total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num), micro))
  return jax.tree.map(lambda x: x / num, total)


def train_step(
  state: TrainState,
  batch: dict,
  *,
  loss_fn: Callable,
  tx,
  schedule,
  partition: Partition,
  config,
  mesh=None,
):
  """One optimisation step on the global batch; returns the new state and its metrics."""
  rng = jax.random.fold_in(state.rng, state.step)
  trainable, frozen = partition.split(state.params)
  metrics, grads = loss_and_grads(
    loss_fn, trainable, frozen, batch, rng, partition=partition, config=config, mesh=mesh
  )
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  params = partition.merge(trainable, frozen)
  metrics.update(
    {
      "train/learning_rate": schedule(state.step),
      "train/grad_norm": optax.tree.norm(grads),
      "train/param_norm": optax.tree.norm(params),
      "train/update_norm": optax.tree.norm(updates),
    }
  )
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def check_finite(step: int, metrics: dict, last_saved: int | None, where_saved: str) -> None:
  """Raises NonFiniteLossError naming the step, the loss terms and the last good checkpoint."""
  values = {k: float(metrics[k]) for k in ("loss/total", "train/grad_norm")}
  if all(np.isfinite(v) for v in values.values()):
    return
  where = (
    f"step {last_saved} in {where_saved}"
    if last_saved is not None
    else "none (no checkpoint had been written)"
  )
  terms = {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}
  raise NonFiniteLossError(
    f"Non-finite training values at step {step}: {values}, loss terms {terms}. Training "
    f"stopped; the last good checkpoint is {where}. Lower optim.learning_rate or check the "
    "input data, then rerun the same command to resume from that checkpoint."
  )


def jit_train_step(
  config: ml_collections.ConfigDict,
  loss_fn: Callable,
  tx,
  schedule,
  partition: Partition,
  mesh,
  state_shardings,
):
  """`train_step` jitted for `mesh`: the one place its shardings and donation are declared.

  The state keeps `state_shardings` and is donated; the batch is split over the data-parallel
  axes; metrics come back replicated.
  """
  return sharding.MeshJit(
    jax.jit(
      functools.partial(
        train_step,
        loss_fn=loss_fn,
        tx=tx,
        schedule=schedule,
        partition=partition,
        config=config,
        mesh=mesh,
      ),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,),
    ),
    mesh,
    sharding.rules(config),
  )
