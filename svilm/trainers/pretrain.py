"""S-ViLM pretraining loop: init or resume, jitted sharded step, metrics, checkpoints, eval.

`train_and_evaluate(config, workdir)` is the whole job. Every source of randomness is a pure
function of (config.seed, step): the step's key is `fold_in(base_key, step)`, the learning rate
is `schedule(step)`, and the input stream is positioned from the step. A run killed at any
point and restarted in the same workdir therefore ends bit-for-bit where an uninterrupted run
ends (tests/test_resume.py checks this).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from jax.experimental import multihost_utils

from data_pipelines import input_pipeline
from data_pipelines import tokenizer as tokenizer_lib
from svilm import checkpointing
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm import sharding
from svilm.evaluators import pretrain_eval
from svilm.models import svilm as svilm_model


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint holds. `rng` is the base key; it never advances."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def build_model(config: ml_collections.ConfigDict) -> svilm_model.SViLM:
  """The SViLM module of `config.model` (compute dtype, remat and scan apply to both towers)."""
  model = config.model
  scaling = dict(remat=model.remat, scan_layers=model.scan_layers)
  return svilm_model.SViLM(video={**model.video.to_dict(), **scaling},
                           text={**model.text.to_dict(), **scaling},
                           embed_dim=model.embed_dim, temperature_init=model.temperature_init,
                           learn_temperature=model.learn_temperature,
                           dtype=jnp.dtype(model.dtype))


def make_optimizer(config: ml_collections.ConfigDict):
  """AdamW with linear warmup and cosine decay; weight decay on matrices only."""
  optim = config.optim
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate,
      warmup_steps=min(optim.warmup_steps, config.total_steps - 1),
      decay_steps=config.total_steps,
      end_value=optim.learning_rate * optim.end_learning_rate_ratio)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay,
                   mask=decay_mask)
  if optim.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
  return tx, schedule


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict:
  """Zeros shaped like a training batch (the input-pipeline contract), for init and tracing."""
  data = config.data
  return {
      "video": jnp.zeros((batch_size, data.num_frames, data.resolution, data.resolution, 3)),
      "text_tokens": jnp.zeros((batch_size, data.max_text_len), jnp.int32),
      "text_mask": jnp.ones((batch_size, data.max_text_len), jnp.int32),
      "noun_tokens": jnp.zeros((batch_size, data.num_nouns, data.max_noun_len), jnp.int32),
      "noun_mask": jnp.ones((batch_size, data.num_nouns, data.max_noun_len), jnp.int32),
      "noun_valid": jnp.ones((batch_size, data.num_nouns), jnp.int32),
  }


def _init_params(model, config: ml_collections.ConfigDict):
  """Parameters from config.seed, still boxed with their logical axis names; and the base key."""
  init_key, base_key = jax.random.split(jax.random.PRNGKey(config.seed))
  batch = dummy_batch(config, 2)
  variables = model.init({"params": init_key, "gumbel": init_key, "dropout": init_key},
                         batch["video"], batch["text_tokens"], batch["text_mask"],
                         batch["noun_tokens"], batch["noun_mask"], train=False)
  return variables["params"], base_key


def init_state(model, tx, config: ml_collections.ConfigDict) -> TrainState:
  """Fresh parameters and optimizer state from config.seed (jit-able, no inputs)."""
  boxed, base_key = _init_params(model, config)
  params = flax.linen.meta.unbox(boxed)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=base_key)


def abstract_state_and_shardings(config: ml_collections.ConfigDict, model, tx, mesh):
  """(abstract TrainState, its shardings on `mesh`) from the model's logical axis names and
  `config.mesh.rules` (see svilm/sharding.py). Nothing is computed or allocated."""
  boxed, _ = jax.eval_shape(functools.partial(_init_params, model, config))
  abstract = jax.eval_shape(functools.partial(init_state, model, tx, config))
  params = sharding.param_shardings(abstract.params, flax.linen.get_partition_spec(boxed),
                                    mesh, sharding.rules(config))
  return abstract, sharding.state_shardings(abstract, params, mesh)


def compute_losses(params, batch, rng, *, model, config):
  """Cut-and-paste, forward pass and the three S-ViLM losses; returns (total, metrics)."""
  cut_rng, gumbel_rng, dropout_rng = jax.random.split(rng, 3)
  video = batch["video"]
  positions = configuration.num_temporal_positions(config)
  cut = config.cut_and_paste
  if cut.enabled:
    video, fg_mask = losses.cut_and_paste(cut_rng, video, positions, cut.min_span, cut.max_span)
  else:
    fg_mask = jnp.ones((video.shape[0], positions), jnp.float32)
  outputs, intermediates = model.apply(
      {"params": params}, video, batch["text_tokens"], batch["text_mask"],
      batch["noun_tokens"], batch["noun_mask"], train=True,
      rngs={"gumbel": gumbel_rng, "dropout": dropout_rng})
  weights = fg_mask if config.loss.video_pooling == "foreground" else None
  video_emb = svilm_model.pool_video_embedding(outputs["clip_emb"], weights)
  scale = outputs["logit_scale"]
  terms, metrics = {}, {}
  terms["contrast"], contrast_metrics = losses.contrastive_loss(
      video_emb, outputs["text_emb"], scale)
  if cut.enabled:
    terms["temporal"] = losses.temporal_grouping_loss(
        intermediates["clip_features"], fg_mask, config.loss.temporal_temperature,
        config.loss.temporal_kind)
  terms["grounding"], grounding_metrics = losses.spatial_grounding_loss(
      outputs["noun_emb"], batch["noun_valid"], outputs["group_emb"],
      config.loss.grounding_assign_temperature, scale)
  total = losses.total_loss(terms, {"contrast": config.loss.contrast_weight,
                                     "temporal": config.loss.temporal_weight,
                                     "grounding": config.loss.grounding_weight})
  metrics.update({f"loss/{name}": value for name, value in terms.items()})
  metrics.update({f"train/{k}": v for k, v in {**contrast_metrics, **grounding_metrics}.items()})
  metrics["loss/total"] = total
  metrics["train/temperature"] = 1.0 / scale
  return total, metrics


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
        x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None,
                                                                       sharding.BATCH_AXES)))
  return jax.tree.map(split, batch)


def loss_and_grads(params, batch, rng, *, model, config, mesh=None):
  """(metrics, grads) of the step: one pass, or the mean over optim.grad_accum_steps
  micro-batches (micro-batch i uses key fold_in(rng, i))."""
  grad_fn = jax.value_and_grad(
      functools.partial(compute_losses, model=model, config=config), has_aux=True)
  num = config.optim.grad_accum_steps
  if num == 1:
    (_, metrics), grads = grad_fn(params, batch, rng)
    return metrics, grads

  def accumulate(total, inputs):
    i, micro = inputs
    (_, metrics), grads = grad_fn(params, micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, total, (metrics, grads)), None

  micro = _micro_batches(batch, num, mesh)
  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(lambda: grad_fn(params, first, rng))
  (_, metrics_shape), grads_shape = shapes
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), (metrics_shape, grads_shape))
  total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num), micro))
  return jax.tree.map(lambda x: x / num, total)


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, config, mesh=None):
  """One optimisation step on the global batch; returns the new state and its metrics."""
  rng = jax.random.fold_in(state.rng, state.step)
  metrics, grads = loss_and_grads(state.params, batch, rng, model=model, config=config,
                                  mesh=mesh)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics.update({"train/learning_rate": schedule(state.step),
                  "train/grad_norm": optax.tree.norm(grads),
                  "train/param_norm": optax.tree.norm(params),
                  "train/update_norm": optax.tree.norm(updates)})
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


_SIGTERM = threading.Event()


def _preempted(step: int) -> bool:
  """True once SIGTERM arrived; on several processes, at a step all of them agree on.

  JAX's coordination service delivers the preemption notice to every process of a
  multi-process run, and `reached_preemption_sync_point` makes them stop at the same step (a
  process that stopped alone would hang the others in their next collective).
  """
  if jax.process_count() > 1:
    return multihost_utils.reached_preemption_sync_point(step)
  return _SIGTERM.is_set()


def jit_train_step(config: ml_collections.ConfigDict, model, tx, schedule, mesh,
                   state_shardings):
  """`train_step` jitted for `mesh`: the one place its shardings and donation are declared.

  The state keeps `state_shardings` (from `abstract_state_and_shardings`) and is donated; the
  batch is split over the data-parallel axes; metrics come back replicated.
  """
  return sharding.MeshJit(jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule, config=config,
                        mesh=mesh),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,)),
      mesh, sharding.rules(config))


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf; nothing after the last good checkpoint was saved."""


def _check_finite(step: int, metrics: dict, last_saved: int | None, workdir: str) -> None:
  values = {k: float(metrics[k]) for k in ("loss/total", "train/grad_norm")}
  if all(np.isfinite(v) for v in values.values()):
    return
  where = (f"step {last_saved} in {checkpointing.checkpoint_dir(workdir)}"
           if last_saved is not None else "none (no checkpoint had been written)")
  terms = {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}
  raise NonFiniteLossError(
      f"Non-finite training values at step {step}: {values}, loss terms {terms}. Training "
      f"stopped; the last good checkpoint is {where}. Lower optim.learning_rate or check the "
      "input data, then rerun the same command to resume from that checkpoint.")


def _flatten(config: ml_collections.ConfigDict) -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
    else:
      flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains from scratch or resumes from WORKDIR/checkpoints; returns the final eval metrics."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  devices = dict(num_devices=jax.device_count(), process_count=jax.process_count())
  configuration.finalize(config, vocab_size=None, **devices)   # fail before touching data
  sources = data_setup.prepare(config)
  tokenizer = tokenizer_lib.Tokenizer(sources.tokenizer_path)
  config = configuration.finalize(config, vocab_size=tokenizer.vocab_size, **devices)
  mesh = sharding.make_mesh(config)
  model = build_model(config)
  tx, schedule = make_optimizer(config)

  abstract_state, state_shardings = abstract_state_and_shardings(config, model, tx, mesh)
  manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints,
                                       async_save=config.async_checkpointing,
                                       timeout_secs=config.checkpoint_timeout_secs)
  last_saved = manager.latest_step()
  meta = None
  if last_saved is not None:
    # Restores onto this run's mesh, whatever mesh and number of hosts wrote it.
    state, meta = checkpointing.restore(manager, last_saved, abstract_state, state_shardings)
    logging.info("Resumed from checkpoint at step %d in %s", last_saved,
                 checkpointing.checkpoint_dir(workdir))
  else:
    state = jax.jit(functools.partial(init_state, model, tx, config),
                    out_shardings=state_shardings)()
  start_step = int(state.step)
  # The input iterator's state is its position in the record stream (see stream_start).
  start_index = data_setup.stream_start(config, meta, jax.process_count())

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  if start_step == 0:
    writer.write_hparams(_flatten(config))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("Model has %.2fM parameters; %d devices in a %s mesh, global batch %d",
               num_params / 1e6, jax.device_count(), dict(mesh.shape), config.batch_size)

  step_fn = jit_train_step(config, model, tx, schedule, mesh, state_shardings)
  evaluator = pretrain_eval.PretrainEvaluator(config, model, mesh, state_shardings.params,
                                              sources.eval_files, tokenizer)
  train_iter = input_pipeline.as_numpy(data_setup.train_dataset(
      config, sources, tokenizer, start_index=start_index, process_index=jax.process_index(),
      process_count=jax.process_count()))

  def evaluate(params, step: int) -> dict:
    results = evaluator.run(params)
    writer.write_scalars(step, results)
    results = {"step": step, **results}
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    logging.info("Evaluation at step %d: %s", step, results)
    return results

  if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
    _SIGTERM.clear()
    signal.signal(signal.SIGTERM, lambda *_: _SIGTERM.set())
  try:
    results = _train_loop(config, workdir, state, start_step, last_saved, step_fn, train_iter,
                          mesh, manager, writer, evaluate)
  finally:
    # Also on errors: a checkpoint being written must land before the process exits.
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    writer.close()
  return results


def _train_loop(config, workdir, state, start_step, last_saved, step_fn, train_iter, mesh,
                manager, writer, evaluate) -> dict:
  """Steps from start_step to total_steps with logging, checkpoints and evaluation."""
  previous = None   # (step, metrics) of the step before, checked while the next one runs
  log_time, log_step = time.time(), start_step
  results = {}
  for step in range(start_step + 1, config.total_steps + 1):
    batch = sharding.to_global(next(train_iter), mesh)
    state, metrics = step_fn(state, batch)
    if previous is not None:
      _check_finite(*previous, last_saved, workdir)
    previous = (step, metrics)
    if step % config.log_every_steps == 0 or step == config.total_steps:
      _check_finite(step, metrics, last_saved, workdir)
      elapsed, steps = time.time() - log_time, step - log_step
      scalars = {k: float(v) for k, v in metrics.items()}
      scalars["perf/steps_per_sec"] = steps / elapsed
      scalars["perf/examples_per_sec"] = steps * config.batch_size / elapsed
      scalars["perf/examples_per_sec_per_device"] = scalars["perf/examples_per_sec"] / (
          jax.device_count())
      scalars["perf/eta_minutes"] = (config.total_steps - step) * elapsed / steps / 60
      writer.write_scalars(step, scalars)
      logging.info("step %d/%d  loss %.4f  %.1f examples/s  ETA %.1f min", step,
                   config.total_steps, scalars["loss/total"],
                   scalars["perf/examples_per_sec"], scalars["perf/eta_minutes"])
      log_time, log_step = time.time(), step
    if step % config.checkpoint_every_steps == 0 or step == config.total_steps:
      _check_finite(step, metrics, last_saved, workdir)   # never save a broken state
      checkpointing.save(manager, step, state,
                         data_setup.stream_meta(config, step, jax.process_count()))
      last_saved = step
    if config.eval_every_steps and step % config.eval_every_steps == 0:
      results = evaluate(state.params, step)
    if step < config.total_steps and _preempted(step):
      if last_saved != step:
        _check_finite(step, metrics, last_saved, workdir)
        checkpointing.save(manager, step, state,
                           data_setup.stream_meta(config, step, jax.process_count()))
      logging.warning("Preempted (SIGTERM) after step %d: checkpoint saved in %s; rerun the "
                      "same command to resume", step, checkpointing.checkpoint_dir(workdir))
      return {"step": step, "preempted": True}
  if not results or results["step"] != int(state.step):
    results = evaluate(state.params, int(state.step))
  return results
