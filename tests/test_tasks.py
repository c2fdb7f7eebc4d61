"""Every registered task, through the one trainer: a smoke test parametrised over the registry.

For each task, its config's `tiny` variant (configs/<task>.py:tiny) on the session's ShapesWorld:
  * trains 4 steps and evaluates (eval_results.json with the task's metrics);
  * a run preempted after step 2 and rerun in the same workdir ends with exactly the results
    of the uninterrupted run (resume = same checkpoint, same data position, same randomness);
  * `total_steps=0` with `init_from` = the finished run evaluates the loaded weights without
    training and reproduces the run's own final evaluation exactly (evaluation is a function
    of the checkpoint and the data alone);
  * `--compile_only` compiles its train step on the 8-device mesh and reports its memory and
    FLOPs.
The runs share one TrainContext (trainer.setup returns the same one for the same config), so
the train step is compiled once.
A new task is covered by adding it to the registry and giving its config a `tiny` variant.
"""

import importlib
import json
import os

import pytest

from data_pipelines import tokenizer as tokenizer_lib
from svilm import compile_check
from svilm import data_setup
from svilm import tasks
from svilm.trainers import trainer


def task_config(name: str, shapesworld_dir: str):
  """configs/<name>.py:tiny pointing at the session's ShapesWorld cache."""
  config = importlib.import_module(f"configs.{name}").get_config("tiny")
  config.data.shapesworld_dir = shapesworld_dir
  config.total_steps = 4
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  return config


def _results(workdir) -> dict:
  with open(os.path.join(workdir, "eval_results.json")) as f:
    return json.load(f)


def _vocab_size(config) -> int:
  return tokenizer_lib.Tokenizer(data_setup.prepare(config).tokenizer_path).vocab_size


def _preempt_after(step: int):
  return lambda current: current >= step


@pytest.mark.parametrize("name", tasks.names())
def test_task_trains_resumes_evaluates_and_compiles(name, shapesworld_cache, tmp_path, monkeypatch):
  config = task_config(name, shapesworld_cache)
  full = trainer.train_and_evaluate(config, str(tmp_path / "full"))
  assert full["step"] == 4 and _results(tmp_path / "full") == full
  metrics = {k for k in full if k != "step"}
  assert metrics and all("/" in k for k in metrics), metrics

  # Preempted after step 2 (as SIGTERM would), then the same command again.
  with monkeypatch.context() as patch:
    patch.setattr(trainer, "_preempted", _preempt_after(2))
    stopped = trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert stopped == {"step": 2, "preempted": True}
  assert trainer.train_and_evaluate(config, str(tmp_path / "resumed")) == full
  # The three runs shared one context, and in it one set of evaluators (compiled once).
  ctx = trainer.setup(config, vocab_size=_vocab_size(config))
  assert [k.split(":")[0] for k in ctx.built].count("evaluators") == 1

  # Zero steps from the finished run's checkpoint: the loaded weights, evaluated.
  config.init_from = str(tmp_path / "full")
  config.total_steps = 0
  zero_shot = trainer.train_and_evaluate(config, str(tmp_path / "zero"))
  assert zero_shot == {**full, "step": 0}

  # --compile_only of the same config (it reads no data, so it is told the vocabulary size):
  # the run's own train step, which this process has compiled already.
  config.total_steps = 4
  config.init_from = ""
  config.model.text.vocab_size = _vocab_size(config)
  report = compile_check.compile_train_step(config)
  assert (report["task"], report["devices"]) == (name, 8)
  assert report["global_batch"] == config.batch_size
  # The replicated state (params + 2 Adam moments; no moments for frozen parameters, nearly
  # all of them in a linear probe) is an argument of every device.
  copies = 1 if config.optim.freeze else 3
  assert report["arguments"] > copies * 4 * report["parameters"] > 0
  assert report["peak"] >= report["arguments"] and report["temporaries"] > 0
  assert report["flops_per_step"] == pytest.approx(8 * report["flops_per_device"])
  assert report["flops_per_device"] > 0


def test_an_unknown_task_is_an_error_listing_the_known_ones():
  with pytest.raises(
    ValueError,
    match="known tasks: action_recognition, pretrain, retrieval, temporal_localization, video_qa",
  ):
    tasks.get("pretrian")


def test_setup_returns_the_same_context_for_the_same_config(tiny):
  first = trainer.setup(tiny.copy_and_resolve_references(), vocab_size=128)
  assert trainer.setup(tiny.copy_and_resolve_references(), vocab_size=128) is first
  assert trainer.setup(tiny, vocab_size=256) is not first  # another finalized config
  other = trainer.setup(
    tiny.copy_and_resolve_references(), vocab_size=128, devices=[first.mesh.devices.flat[0]]
  )
  assert other is not first and other.mesh.size == 1
  # Its jitted functions are built once.
  assert first.jit_train_step() is first.jit_train_step()
