"""The Task contract: what a task states about itself, and nothing the generic trainer owns.

A task (pretraining, retrieval, QA, grounding, ...) is one module under svilm/tasks/ with one
`Task` subclass, registered by name in svilm/tasks/__init__.py. The trainer
(svilm/trainers/trainer.py) owns everything else: the mesh, abstract state and shardings,
init / resume / `config.init_from`, the jitted step (micro-batching, norms, NaN stop, frozen
parameters), checkpoints, SIGTERM, logging and the evaluator cadence. A new task is new files
plus one registry line, never an edit to the loop.

What a task states:
  validate_config   checks and derived values of its own config keys, naming the key
  build_model       the Flax module (Linen)
  dummy_batch       the batch contract: zeros of every key the step reads, stated once
  init_variables    model.init on a dummy batch (which arguments the model takes)
  loss_fn           (params, batch, rng) -> (scalar loss, {metric name: value}), pure, jit-able
  input_ops         the data_pipelines/ops.py ops that turn a record into that batch
                    (train_ops: the training ones, when they need something read from the data)
  evaluators        the evaluators named in config.evals, each with `run(params) -> metrics`
  init_from_map     which checkpoint subtrees feed which model subtrees for config.init_from
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Protocol

from flax import linen as nn
import jax
import ml_collections

Batch = dict[str, Any]
Metrics = dict[str, Any]


class Evaluator(Protocol):
  """One evaluation, run by the trainer at its cadence; `run` returns {"<task>/<metric>": v}."""

  name: str
  every_steps: int  # 0: only at the end of training

  def run(self, params: Any) -> dict[str, float]: ...


# An evaluator may also have `outputs() -> {file name: JSON-able value}`: files of its last run
# (e.g. predictions in a benchmark's format) that the trainer writes into the workdir beside
# eval_results.json, overwriting those of an earlier evaluation; and `images() -> {name: uint8
# [H, W, 3]}`: figures of its last run, which the trainer writes to TensorBoard and as
# WORKDIR/figures/<name>_<step>.png.


@dataclasses.dataclass(frozen=True)
class DataContext:
  """What the trainer resolved about the data before building the task's pipelines."""

  sources: Any  # svilm.data_setup.DataSources
  tokenizer: Any  # data_pipelines.tokenizer.Tokenizer


class Task:
  """Base class of every task; subclasses override what they need (see the module docstring).

  `name` is the registry name and the prefix of the task's own metric keys. `init_from_map`
  maps checkpoint subtree paths ("/"-joined; "" is the whole tree) to model subtree paths.
  """

  name: str = ""
  init_from_map: Mapping[str, str] = {}

  def validate_config(self, config: ml_collections.ConfigDict, vocab_size: int | None) -> None:
    """Checks the task's keys of an unlocked copy of `config` and fills derived values.

    vocab_size is None before the tokenizer is known (the early check at start-up). Raise
    svilm.configuration.ConfigError with a message that names the key.
    """

  def build_model(self, config: ml_collections.ConfigDict) -> nn.Module:
    raise NotImplementedError

  def dummy_batch(self, config: ml_collections.ConfigDict, batch_size: int) -> Batch:
    raise NotImplementedError

  def init_variables(
    self,
    model: nn.Module,
    config: ml_collections.ConfigDict,
    rngs: dict[str, jax.Array],
    batch: Batch,
  ) -> dict:
    """model.init on `batch` (a dummy batch of 2), in inference mode."""
    raise NotImplementedError

  def loss_fn(
    self,
    params: Any,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    config: ml_collections.ConfigDict,
  ) -> tuple[jax.Array, Metrics]:
    raise NotImplementedError

  def input_ops(
    self, config: ml_collections.ConfigDict, tokenizer: Any, *, train: bool
  ) -> tuple[list, list]:
    """(example ops, batch ops) that turn a record into the batch contract
    (data_pipelines/ops.py); built with this `train` and seed=config.seed."""
    raise NotImplementedError

  def train_ops(self, config: ml_collections.ConfigDict, data: DataContext) -> tuple[list, list]:
    """The training (example ops, batch ops): `input_ops(train=True)`. A task whose ops need
    something read from the data first overrides this (video_qa: the answer vocabulary)."""
    return self.input_ops(config, data.tokenizer, train=True)

  def train_dataset(
    self,
    config: ml_collections.ConfigDict,
    data: DataContext,
    *,
    start_index: int,
    process_index: int,
    process_count: int,
  ):
    """This host's training batches: the task's `train_ops` over the configured shards."""
    from svilm import data_setup  # data_setup imports the data pipeline; keep base light

    example_ops, batch_ops = self.train_ops(config, data)
    return data_setup.train_dataset(
      config,
      data.sources,
      example_ops=example_ops,
      batch_ops=batch_ops,
      start_index=start_index,
      process_index=process_index,
      process_count=process_count,
    )

  def video_grid(self, config: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
    """The video model's tubelet grid (N_t, H_p, W_p), recorded in checkpoints so that
    init_from can resample position tables; None for a task without a video model."""
    return None

  # The evaluator types config.evals may name for this task (see `build_evaluator`).
  evaluator_types: tuple[str, ...] = ()

  def evaluation_split(self, kind: str, data: DataContext) -> tuple[list[str], str]:
    """(files, metric prefix) of the split an evaluator of type `kind` reads: the held-out
    split, "<name>/"; for "compositional", ShapesWorld's split of unseen colour-shape pairs
    beside it, "<name>_compositional/"."""
    files = data.sources.eval_files
    if kind != "compositional":
      return files, f"{self.name}/"
    from data_pipelines import input_pipeline  # keep base light, as train_dataset does

    compositional = input_pipeline.list_shards(os.path.dirname(files[0]), "compositional")
    return compositional, f"{self.name}_compositional/"

  def build_evaluator(
    self,
    kind: str,
    config: ml_collections.ConfigDict,
    data: DataContext,
    *,
    model: nn.Module,
    mesh: jax.sharding.Mesh,
    params_shardings: Any,
  ) -> Any:
    """An object with `run(params) -> {"<task>/<metric>": value}` for evaluator type `kind`."""
    raise NotImplementedError

  def evaluators(
    self,
    config: ml_collections.ConfigDict,
    data: DataContext,
    *,
    model: nn.Module,
    mesh: jax.sharding.Mesh,
    params_shardings: Any,
  ) -> list[Evaluator]:
    """The evaluators config.evals names ({name: {type, every_steps}}), ready to run."""
    return [
      Scheduled(
        name,
        spec.every_steps,
        self.build_evaluator(
          spec.type, config, data, model=model, mesh=mesh, params_shardings=params_shardings
        ),
      )
      for name, spec in config.evals.items()
    ]


@dataclasses.dataclass(frozen=True)
class Scheduled:
  """An evaluator under its config.evals name, run every `every_steps` (0: at the end only);
  the trainer also runs every evaluator once at the end of training."""

  name: str
  every_steps: int
  evaluator: Any

  def run(self, params: Any) -> dict[str, float]:
    return self.evaluator.run(params)

  def outputs(self) -> dict[str, Any]:
    """The evaluator's files of its last run ({} for one without any)."""
    return self.evaluator.outputs() if hasattr(self.evaluator, "outputs") else {}

  def images(self) -> dict[str, Any]:
    """The evaluator's figures of its last run ({} for one without any)."""
    return self.evaluator.images() if hasattr(self.evaluator, "images") else {}


def validate_evals(config: ml_collections.ConfigDict, task: Task) -> None:
  """config.evals: each entry a known evaluator type of the task, with every_steps >= 0."""
  from svilm import configuration  # configuration imports the registry, which imports this

  configuration.require(len(config.evals) > 0, "config.evals names no evaluator")
  for name, spec in config.evals.items():
    configuration.require(
      spec.type in task.evaluator_types,
      f"config.evals.{name}.type={spec.type!r} is not an evaluator of task {task.name!r}; "
      f"known: {', '.join(task.evaluator_types)}",
    )
    configuration.require(
      spec.every_steps >= 0,
      f"config.evals.{name}.every_steps must be >= 0 (0: only at the end), got {spec.every_steps}",
    )


LossFn = Callable[..., tuple[jax.Array, Metrics]]
