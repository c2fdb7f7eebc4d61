"""The one training loop for every task: setup -> init/resume -> steps -> checkpoints -> evals.

`setup(config)` builds everything a step needs (finalized config, task, mesh, model, optimizer,
frozen-parameter partition, abstract state and its shardings) and returns it as one
`TrainContext`; `train_and_evaluate(config, workdir)` is the whole job. `--compile_only`, the
benchmarks and the tests call the same `setup`, so there is one copy of that sequence.

Start order: a checkpoint in WORKDIR/checkpoints (resume) > `config.init_from` (parameters
only, mapped into the task's model) > fresh parameters from config.seed. Every source of
randomness is a pure function of (config.seed, step), and the input stream is positioned from
the step, so a run killed at any point and restarted in the same workdir ends bit-for-bit where
an uninterrupted run ends (tests/test_resume.py).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import signal
import threading
import time
from typing import Any, Sequence

from absl import logging
from clu import metric_writers
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import tensorflow as tf

from data_pipelines import input_pipeline
from data_pipelines import tokenizer as tokenizer_lib
from svilm import checkpointing
from svilm import configuration
from svilm import data_setup
from svilm import param_mapping
from svilm import paths
from svilm import sharding
from svilm import tasks
from svilm.tasks import base
from svilm.trainers import train_step as train_step_lib

TrainState = train_step_lib.TrainState
NonFiniteLossError = train_step_lib.NonFiniteLossError


@dataclasses.dataclass(frozen=True)
class TrainContext:
  """What `setup` built: everything needed to initialise, restore, step and lower."""

  config: ml_collections.ConfigDict  # finalized and locked
  task: base.Task
  mesh: jax.sharding.Mesh
  model: flax.linen.Module
  tx: Any
  schedule: Any
  partition: train_step_lib.Partition
  abstract_state: TrainState  # ShapeDtypeStructs
  state_shardings: TrainState  # NamedShardings, same tree
  # What `once` built for this context: the jitted functions below (so that XLA's in-memory
  # cache serves every later call with the same shapes) and figures traced from them.
  built: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  def once(self, name: str, build):
    """build() the first time `name` is asked for in this context; the same object after."""
    if name not in self.built:
      self.built[name] = build()
    return self.built[name]

  @property
  def loss_fn(self):
    return functools.partial(self.task.loss_fn, model=self.model, config=self.config)

  def init_params(self):
    """Fresh parameters from config.seed, still boxed with their logical axis names; and the
    base key of the train state (jit-able, no inputs)."""
    init_key, base_key = jax.random.split(jax.random.PRNGKey(self.config.seed))
    batch = self.task.dummy_batch(self.config, 2)
    rngs = {"params": init_key, "gumbel": init_key, "dropout": init_key}
    variables = self.task.init_variables(self.model, self.config, rngs, batch)
    return variables["params"], base_key

  def state_from_params(self, params, base_key) -> TrainState:
    """A step-0 state around `params` (optimizer state of the trainable part only)."""
    trainable, _ = self.partition.split(params)
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(trainable), rng=base_key
    )

  def fresh_state(self) -> TrainState:
    """init_params + state_from_params, unplaced (for jit and eval_shape)."""
    boxed, base_key = self.init_params()
    return self.state_from_params(flax.linen.meta.unbox(boxed), base_key)

  def init_state(self) -> TrainState:
    """Fresh parameters and optimizer state from config.seed, on the state shardings."""
    return self.once(
      "init_state", lambda: jax.jit(self.fresh_state, out_shardings=self.state_shardings)
    )()

  def jit_train_step(self):
    """The jitted, sharded, donating train step (train_step.jit_train_step)."""
    return self.once(
      "train_step",
      lambda: train_step_lib.jit_train_step(
        self.config,
        self.loss_fn,
        self.tx,
        self.schedule,
        self.partition,
        self.mesh,
        self.state_shardings,
      ),
    )

  def batch_spec(self, batch_size: int | None = None) -> dict:
    """Abstract global batch of the task's contract, on the batch sharding.

    It includes `index`, which every dataset adds to the task's keys
    (data_pipelines/input_pipeline.py), so that a step lowered on it is the one a run calls:
    --compile_only after a run in the same process reuses the run's compiled step.
    """
    size = batch_size or self.config.batch_size
    batch = jax.eval_shape(
      lambda: {
        **self.task.dummy_batch(self.config, size),
        "index": jnp.zeros((size,), jnp.int32),
      }
    )
    return sharding.with_shardings(
      batch, jax.tree.map(lambda _: sharding.batch_sharding(self.mesh), batch)
    )

  def lower_train_step(self):
    """The train step lowered for the mesh on abstract inputs (nothing allocated)."""
    state = sharding.with_shardings(self.abstract_state, self.state_shardings)
    return self.jit_train_step().lower(state, self.batch_spec())


# setup()'s results by (finalized config, devices, process count): another run of the same
# config in this process (a notebook, a sweep, the tests) reuses its jitted functions, and
# with them XLA's compiled programs, instead of compiling again. Each entry holds compiled
# programs, so only the most recent few are kept.
_CONTEXTS: collections.OrderedDict[tuple, TrainContext] = collections.OrderedDict()
_MAX_CONTEXTS = 4


def setup(
  config: ml_collections.ConfigDict,
  *,
  vocab_size: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  process_count: int | None = None,
) -> TrainContext:
  """Finalizes `config` and builds its TrainContext on `devices` (default: all).

  vocab_size: the tokenizer's; None takes it as `data_setup.vocab_size` does, reading no
  shards (what --compile_only does). The same finalized config
  on the same devices returns the same context (treat ctx.config as read-only).
  """
  devices = list(devices if devices is not None else jax.devices())
  process_count = jax.process_count() if process_count is None else process_count
  if vocab_size is None:
    # Reject a bad config before anything is built: vocab_size may build ShapesWorld.
    configuration.finalize(
      config, num_devices=len(devices), vocab_size=None, process_count=process_count
    )
    vocab_size = data_setup.vocab_size(config)
  config = configuration.finalize(
    config, num_devices=len(devices), vocab_size=vocab_size, process_count=process_count
  )
  key = (config.to_json_best_effort(sort_keys=True), tuple(d.id for d in devices), process_count)
  if key in _CONTEXTS:
    _CONTEXTS.move_to_end(key)
    return _CONTEXTS[key]
  _CONTEXTS[key] = _build_context(config, devices)
  while len(_CONTEXTS) > _MAX_CONTEXTS:
    _CONTEXTS.popitem(last=False)
  return _CONTEXTS[key]


def _build_context(config: ml_collections.ConfigDict, devices: list) -> TrainContext:
  """setup() for a finalized config: task, mesh, model, optimizer, partition, shardings."""
  task = tasks.get(config.task)
  mesh = sharding.make_mesh(config, devices)
  model = task.build_model(config)
  tx, schedule = train_step_lib.make_optimizer(config)
  probe = TrainContext(
    config, task, mesh, model, tx, schedule, train_step_lib.Partition(set()), None, None
  )
  boxed, _ = jax.eval_shape(probe.init_params)
  try:
    frozen = train_step_lib.frozen_paths(
      flax.linen.meta.unbox(boxed), train_step_lib.freeze_patterns(config)
    )
  except ValueError as e:
    raise configuration.ConfigError(str(e)) from None
  probe = dataclasses.replace(probe, partition=train_step_lib.Partition(frozen))
  abstract = jax.eval_shape(probe.fresh_state)
  params = sharding.param_shardings(
    abstract.params, flax.linen.get_partition_spec(boxed), mesh, sharding.rules(config)
  )
  return dataclasses.replace(
    probe,
    abstract_state=abstract,
    state_shardings=sharding.state_shardings(abstract, params, mesh),
    built={},
  )


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


def _flatten(config: ml_collections.ConfigDict) -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
    else:
      flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return flat


def init_from_map(config: ml_collections.ConfigDict, task: base.Task) -> dict[str, str]:
  """config.init_from_map ("src:dst,src2:dst2"; "" = the task's own map) as a dict."""
  if not config.init_from_map:
    return dict(task.init_from_map)
  mapping = {}
  for pair in config.init_from_map.split(","):
    source, sep, target = pair.strip().partition(":")
    if not sep:
      raise configuration.ConfigError(
        f"config.init_from_map={config.init_from_map!r}: each entry must be "
        "'checkpoint_subtree:model_subtree' (e.g. 'video_encoder:video_encoder')"
      )
    mapping[source.strip()] = target.strip()
  return mapping


def init_from_checkpoint(ctx: TrainContext, path: str) -> TrainState:
  """A step-0 state whose parameters come from the checkpoint at `path` (config.init_from).

  Only parameters are read; the subtrees of `init_from_map` are copied into the task's model
  (position tables resampled to this run's frames, resolution and text length), everything
  else keeps its fresh initialisation from config.seed, and the optimizer starts afresh. The
  table of what was loaded, resampled, initialised and left unused is logged.
  """
  try:
    source, meta = checkpointing.load_params(path)
  except FileNotFoundError as e:  # a path the user gave: one FATAL line in svilm.main
    raise configuration.ConfigError(str(e)) from e
  # The fresh parameters (and the base key) come from the same init as a run from scratch,
  # without building an optimizer state that would be thrown away.
  boxed, base_key = ctx.once("init_params", lambda: jax.jit(ctx.init_params))()
  fresh = jax.device_get(flax.linen.meta.unbox(boxed))
  grid = ctx.task.video_grid(ctx.config)
  params, report = param_mapping.map_params(
    source,
    fresh,
    init_from_map(ctx.config, ctx.task),
    source_grid=meta.get("video_grid"),
    target_grid=grid,
  )
  logging.info(
    "init_from %s (step %d):\n%s", meta["path"], meta["step"], param_mapping.format_report(report)
  )
  from_params = ctx.once(
    "state_from_params",
    lambda: jax.jit(ctx.state_from_params, out_shardings=ctx.state_shardings),
  )
  return from_params(params, base_key)


def restore_or_init(ctx: TrainContext, manager) -> tuple[TrainState, dict | None, int | None]:
  """(state, checkpoint meta, last saved step), in the start order: the workdir's newest
  checkpoint (resume; it wins over init_from, so a rerun resumes the finetune), else
  config.init_from, else fresh parameters from config.seed. A checkpoint that cannot be read
  is moved aside and the next newest one used; if none can be, that is a ConfigError, never a
  fresh start (see checkpointing.restore_newest_readable)."""
  # Restores onto this run's mesh, whatever mesh and number of hosts wrote it.
  restored = checkpointing.restore_newest_readable(manager, ctx.abstract_state, ctx.state_shardings)
  if restored is not None:
    state, meta, last_saved = restored
    logging.info("Resumed from checkpoint at step %d in %s", last_saved, manager.directory)
    return state, meta, last_saved
  if ctx.config.init_from:
    return init_from_checkpoint(ctx, ctx.config.init_from), None, None
  return ctx.init_state(), None, None


class _Run:
  """One training run's moving parts: the loop, checkpoints and evaluation."""

  def __init__(
    self, ctx: TrainContext, workdir: str, manager, writer, evaluators, last_saved: int | None
  ):
    self.ctx, self.config = ctx, ctx.config
    self.workdir, self.manager, self.writer = workdir, manager, writer
    self.evaluators = evaluators
    self.last_saved = last_saved
    self.results: dict = {}
    self.ran_at: dict[str, int] = {}  # evaluator name -> the step it last evaluated

  def save(self, step: int, state: TrainState) -> None:
    meta = data_setup.stream_meta(self.config, step, jax.process_count())
    grid = self.ctx.task.video_grid(self.config)
    if grid is not None:  # lets init_from resample this run's position tables later
      meta["video_grid"] = list(grid)
    checkpointing.save(self.manager, step, state, meta)
    self.last_saved = step

  def check_finite(self, step: int, metrics: dict) -> None:
    train_step_lib.check_finite(
      step, metrics, self.last_saved, checkpointing.checkpoint_dir(self.workdir)
    )

  def evaluate(self, params, step: int, evaluators) -> dict:
    """Runs `evaluators`, merges their metrics into eval_results.json (flat keys + step)."""
    if self.results.get("step") != step:
      self.results = {"step": step}
    for evaluator in evaluators:
      metrics = evaluator.run(params)
      self.ran_at[evaluator.name] = step
      self.writer.write_scalars(step, metrics)
      self.results.update(metrics)
      if jax.process_index() == 0 and hasattr(evaluator, "outputs"):
        for name, value in evaluator.outputs().items():
          paths.write_json(os.path.join(self.workdir, name), value)
      if jax.process_index() == 0 and hasattr(evaluator, "images"):
        self.write_images(step, evaluator.images())
    if jax.process_index() == 0:
      path = os.path.join(self.workdir, "eval_results.json")
      paths.write_json(path, self.results, indent=2, sort_keys=True)
    logging.info("Evaluation at step %d: %s", step, self.results)
    return self.results

  def write_images(self, step: int, images: dict) -> None:
    """Figures to TensorBoard (clu image summaries) and WORKDIR/figures/<name>_<step>.png."""
    if not images:
      return
    self.writer.write_images(step, {name: image[None] for name, image in images.items()})
    directory = os.path.join(self.workdir, "figures")
    tf.io.gfile.makedirs(directory)
    for name, image in images.items():
      path = os.path.join(directory, f"{name.replace('/', '_')}_{step:06d}.png")
      with tf.io.gfile.GFile(path, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())

  def log(self, step: int, metrics: dict, elapsed: float, steps: int) -> None:
    """Writes the step's metrics, with throughput and ETA over the `steps` steps that took
    `elapsed` seconds; steps=0 (only the compiling first step since the last line) logs the
    loss alone, since a rate that includes compilation would mislead."""
    config = self.config
    scalars = {k: float(v) for k, v in metrics.items()}
    if steps == 0:
      self.writer.write_scalars(step, scalars)
      logging.info("step %d/%d  loss %.4f", step, config.total_steps, scalars["loss/total"])
      return
    scalars["perf/steps_per_sec"] = steps / elapsed
    scalars["perf/examples_per_sec"] = steps * config.batch_size / elapsed
    scalars["perf/examples_per_sec_per_device"] = scalars["perf/examples_per_sec"] / (
      jax.device_count()
    )
    scalars["perf/eta_minutes"] = (config.total_steps - step) * elapsed / steps / 60
    self.writer.write_scalars(step, scalars)
    logging.info(
      "step %d/%d  loss %.4f  %.1f examples/s  ETA %.1f min",
      step,
      config.total_steps,
      scalars["loss/total"],
      scalars["perf/examples_per_sec"],
      scalars["perf/eta_minutes"],
    )

  def train(self, state: TrainState, step_fn, train_iter) -> dict:
    """Steps from the state's step to total_steps with logging, checkpoints and evaluation."""
    config, mesh = self.config, self.ctx.mesh
    start_step = int(state.step)
    previous = None  # (step, metrics) of the step before, checked while the next one runs
    log_time, log_step = time.time(), start_step
    for step in range(start_step + 1, config.total_steps + 1):
      batch = sharding.to_global(next(train_iter), mesh)
      if step == start_step + 1:
        # The first call compiles (or loads from the compilation cache): timed on its own and
        # left out of the throughput and ETA of the progress lines.
        logging.info("Compiling the train step and running step %d ...", step)
        compile_start = time.time()
        state, metrics = jax.block_until_ready(step_fn(state, batch))
        logging.info("Train step compiled; step %d took %.1f s", step, time.time() - compile_start)
        log_time, log_step = time.time(), step
      else:
        state, metrics = step_fn(state, batch)
      if previous is not None:
        self.check_finite(*previous)
      previous = (step, metrics)
      if step % config.log_every_steps == 0 or step == config.total_steps:
        self.check_finite(step, metrics)
        self.log(step, metrics, time.time() - log_time, step - log_step)
        log_time, log_step = time.time(), step
      if step % config.checkpoint_every_steps == 0 or step == config.total_steps:
        self.check_finite(step, metrics)  # never save a broken state
        self.save(step, state)
      due = [e for e in self.evaluators if e.every_steps and step % e.every_steps == 0]
      if due:
        self.evaluate(state.params, step, due)
      if step < config.total_steps and _preempted(step):
        if self.last_saved != step:
          self.check_finite(step, metrics)
          self.save(step, state)
        logging.warning(
          "Preempted (SIGTERM) after step %d: checkpoint saved in %s; rerun "
          "the same command to resume",
          step,
          checkpointing.checkpoint_dir(self.workdir),
        )
        return {"step": step, "preempted": True}
    final = int(state.step)
    # Every evaluator runs at the end, unless its cadence already ran it at this step.
    pending = [e for e in self.evaluators if self.ran_at.get(e.name) != final]
    if pending or self.results.get("step") != final:
      self.evaluate(state.params, final, pending)
    return self.results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes, or starts from config.init_from) and returns the final eval metrics."""
  workdir = paths.resolve(workdir)
  tf.io.gfile.makedirs(workdir)
  devices = dict(num_devices=jax.device_count(), process_count=jax.process_count())
  configuration.finalize(config, vocab_size=None, **devices)  # fail before touching data
  sources = data_setup.prepare(config)
  tokenizer = tokenizer_lib.Tokenizer(sources.tokenizer_path)
  ctx = setup(config, vocab_size=tokenizer.vocab_size)
  config = ctx.config
  data = base.DataContext(sources=sources, tokenizer=tokenizer)

  manager = checkpointing.make_manager(
    workdir,
    keep=config.keep_checkpoints,
    async_save=config.async_checkpointing,
    timeout_secs=config.checkpoint_timeout_secs,
  )
  state, meta, last_saved = restore_or_init(ctx, manager)
  # The input iterator's state is its position in the record stream (see stream_start).
  start_index = data_setup.stream_start(config, meta, jax.process_count())

  # The default writers (log lines and TensorBoard), except that the hyperparameters go to
  # TensorBoard and config.json only: as a log line they were 3,000 characters long.
  writers = [metric_writers.LoggingWriter()]
  if jax.process_index() == 0:
    summary = metric_writers.SummaryWriter(workdir)
    if int(state.step) == 0:
      summary.write_hparams(_flatten(config))
    writers.append(summary)
    config_json = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    paths.write_text(os.path.join(workdir, "config.json"), config_json)
  writer = metric_writers.AsyncMultiWriter(writers)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info(
    "Task %s: model has %.2fM parameters; %d devices in a %s mesh, global batch %d",
    config.task,
    num_params / 1e6,
    jax.device_count(),
    dict(ctx.mesh.shape),
    config.batch_size,
  )

  step_fn = ctx.jit_train_step()
  # Another run of this context on the same evaluation files (same paths and modification
  # times: a rebuilt split is read again) reuses the evaluators, with their compiled programs.
  eval_files = [(f, paths.mtime(f)) for f in data.sources.eval_files]
  evaluators = ctx.once(
    f"evaluators:{eval_files}:{data.sources.tokenizer_path}",
    lambda: ctx.task.evaluators(
      config, data, model=ctx.model, mesh=ctx.mesh, params_shardings=ctx.state_shardings.params
    ),
  )
  train_iter = input_pipeline.as_numpy(
    ctx.task.train_dataset(
      config,
      data,
      start_index=start_index,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
  )

  if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
    _SIGTERM.clear()
    signal.signal(signal.SIGTERM, lambda *_: _SIGTERM.set())
  run = _Run(ctx, workdir, manager, writer, evaluators, last_saved)
  try:
    return run.train(state, step_fn, train_iter)
  finally:
    # Also on errors: a checkpoint being written must land before the process exits.
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    writer.close()
