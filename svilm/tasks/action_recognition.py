"""Action recognition: classify a video's action with the S-ViLM video tower (two protocols).

The model (svilm/models/classifier.py) pools the video encoder's features and applies one
linear head; the loss is the softmax cross-entropy of the clip's label (`action_labels[0]`).
Protocols, as variants of configs/action_recognition.py:
  linear    the encoder frozen (optim.freeze="video_encoder") and run in inference mode, only
            the head trains: a linear probe. Features are recomputed every step rather than
            cached once, so the probe sees the same random crops as finetuning and needs no
            feature store; on ShapesWorld the frozen forward pass is cheap.
  finetune  the whole encoder and the head train.
Start from a pretraining run with `--config.init_from=WORKDIR`: the video encoder is loaded
(`init_from_map`), the head starts fresh.

Evaluation (svilm/evaluators/action_recognition_eval.py): multi-view testing over the held-out
split (`heldout`) and, on ShapesWorld, the compositional split (`compositional`, unseen
colour-shape pairs), each reporting top-1/5, mean class accuracy and the single-view top-1.

Data: ShapesWorld videos with one action phase and no concurrent actor (the config sets
data.shapesworld.max_phases=1, concurrent_prob=0), so each has exactly one action class of
`text.ACTIONS`; or UCF101 / HMDB51 shards from data_pipelines/readers (one label per video).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from data_pipelines import ops
from data_pipelines.shapesworld import text as shapesworld_text
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm.evaluators import action_recognition_eval
from svilm.models import classifier
from svilm.tasks import base
from svilm.tasks import video_text
from svilm.trainers import train_step

require = configuration.require
BENCHMARKS = {"shapesworld": len(shapesworld_text.ACTIONS), "ucf101": 101, "hmdb51": 51}


def encoder_frozen(config: ml_collections.ConfigDict) -> bool:
  """Whether optim.freeze freezes the whole video encoder (the linear probe)."""
  return "video_encoder" in train_step.freeze_patterns(config)


def compute_loss(params, batch, rng, *, model, config):
  """Softmax cross-entropy of the clip's label over the classes (clips without one skipped)."""
  gumbel_rng, dropout_rng = jax.random.split(rng)
  logits = model.apply(
    {"params": params},
    batch["video"],
    train=True,
    encoder_train=not encoder_frozen(config),
    rngs={"gumbel": gumbel_rng, "dropout": dropout_rng},
  )
  valid = (batch["label_valid"] == 1) & (batch["label"] >= 0)
  loss, accuracy = losses.masked_classification_loss(logits, batch["label"], valid)
  return loss, {"loss/classification": loss, "loss/total": loss, "train/accuracy": accuracy}


class ActionRecognitionTask(base.Task):
  """Video classification on the S-ViLM video tower (configs/action_recognition.py)."""

  name = "action_recognition"
  # The video tower; the head too when the checkpoint has one (a run of this task), not from a
  # pretraining checkpoint, where it starts fresh.
  init_from_map = {"video_encoder": "video_encoder", "?head": "head"}

  def validate_config(self, config, vocab_size):
    video_text.validate_video_text_config(config, vocab_size)
    task = config.action_recognition
    require(
      task.benchmark in BENCHMARKS,
      f"action_recognition.benchmark={task.benchmark!r} is not one of {sorted(BENCHMARKS)}",
    )
    if task.num_classes == -1:
      task.num_classes = BENCHMARKS[task.benchmark]
    require(task.num_classes >= 2, f"action_recognition.num_classes={task.num_classes} < 2")
    require(
      task.temporal_pooling in ("concat", "mean"),
      f"action_recognition.temporal_pooling={task.temporal_pooling!r}: use 'concat' or 'mean'",
    )
    require(
      task.benchmark == "shapesworld" or config.data.path,
      f"action_recognition.benchmark={task.benchmark!r} reads your shards: pass "
      f"--config.data.path=SHARD_DIR (python -m data_pipelines.readers.{task.benchmark})",
    )
    require(
      not (task.benchmark == "shapesworld" and config.data.train_flip),
      "data.train_flip would turn ShapesWorld's 'move left' into 'move right' without changing "
      "the label: keep it False for action_recognition on ShapesWorld",
    )
    views = config.eval
    require(views.num_clips >= 1, f"eval.num_clips must be >= 1, got {views.num_clips}")
    require(views.num_crops in (1, 3), f"eval.num_crops must be 1 or 3, got {views.num_crops}")
    require(
      0.0 < views.crop_fraction <= 1.0,
      f"eval.crop_fraction must lie in (0, 1], got {views.crop_fraction}",
    )

  def build_model(self, config):
    model = config.model
    return classifier.VideoClassifier(
      video={**model.video.to_dict(), "remat": model.remat, "scan_layers": model.scan_layers},
      num_classes=config.action_recognition.num_classes,
      temporal_pooling=config.action_recognition.temporal_pooling,
      dtype=jnp.dtype(model.dtype),
    )

  def video_grid(self, config):
    return video_text.video_grid(config)

  def dummy_batch(self, config, batch_size):
    data = config.data
    return {
      "video": jnp.zeros((batch_size, data.num_frames, data.resolution, data.resolution, 3)),
      "label": jnp.zeros((batch_size,), jnp.int32),
      "label_valid": jnp.ones((batch_size,), jnp.int32),
    }

  def init_variables(self, model, config, rngs, batch):
    return model.init(rngs, batch["video"], train=False)

  def loss_fn(self, params, batch, rng, *, model, config):
    return compute_loss(params, batch, rng, model=model, config=config)

  def input_ops(self, config, tokenizer, *, train):
    """Clips (config.data's crops and flip) and their label; no text."""
    return data_setup.clip_ops(config, train=train, seed=config.seed) + [ops.Label()], []

  # heldout: the eval split; compositional: ShapesWorld's split of unseen colour-shape pairs.
  evaluator_types = ("heldout", "compositional")

  def build_evaluator(self, kind, config, data, *, model, mesh, params_shardings):
    files, prefix = self.evaluation_split(kind, data)
    return action_recognition_eval.ActionRecognitionEvaluator(
      config, model, mesh, params_shardings, files, prefix=prefix
    )


def default_config() -> ml_collections.ConfigDict:
  """config.action_recognition: the task's own keys."""
  return ml_collections.ConfigDict(
    dict(
      benchmark="shapesworld",
      num_classes=-1,  # -1: the benchmark's (ShapesWorld 9, UCF101 101, HMDB51 51)
      # How the head sees the N_t temporal positions (svilm/models/classifier.py): "concat"
      # keeps their order, which direction-defined actions need; "mean" is the usual (?)
      # linear-probe pooling, which cannot tell an action from its reversal.
      temporal_pooling="concat",
    )
  )
