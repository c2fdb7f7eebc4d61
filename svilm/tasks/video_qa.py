"""Open-ended video QA: answer a question about a clip with one of K answers (task `video_qa`).

The model (svilm/models/video_qa.py) runs the S-ViLM video and text towers, fuses the question's
tokens with the video's through cross-attention layers and classifies the fused [CLS] state
over the answer vocabulary; the loss is the softmax cross-entropy of each question's answer,
averaged over the questions of the batch whose answer is in the vocabulary (one outside it has
no target to learn; it still counts, as wrong, in evaluation).

Answer vocabulary: the `video_qa.num_answers` (K) most frequent answers of the training
split's questions (svilm/evaluators/video_qa.py `answer_vocabulary`), read from the training
shards at start-up (only their QA lists are parsed) by every host alike, so it is the same
everywhere and for every resume. The classifier always has K outputs: when the training
answers are fewer than K (ShapesWorld's training split has 26), the rest are never a target
and are never predicted once training has pushed them down.

Training reads each clip once per step with up to `video_qa.train_questions` of its questions
(drawn without replacement, ops.Questions): the video tower runs once for all of them.
Evaluation (svilm/evaluators/video_qa_eval.py) answers every question of every clip of the
held-out split (`heldout`) and, on ShapesWorld, of the compositional split (`compositional`).

Start from a pretraining run with `--config.init_from=WORKDIR`: both towers are loaded
(`init_from_map`); the fusion module starts fresh (its initialisation: the model's docstring).
"""

from __future__ import annotations

import dataclasses

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines import ops
from svilm import configuration
from svilm import data_setup
from svilm import losses
from svilm.evaluators import video_qa as qa_metrics
from svilm.evaluators import video_qa_eval
from svilm.models import video_qa as video_qa_model
from svilm.tasks import base
from svilm.tasks import video_text

require = configuration.require
# benchmark -> how its questions are typed (svilm/evaluators/video_qa.py `question_type`).
BENCHMARKS = {"shapesworld": "shapesworld", "msrvtt_qa": "first_word", "msvd_qa": "first_word"}


def compute_loss(params, batch, rng, *, model, config):
  """Cross-entropy of every in-vocabulary question of the batch, averaged over them."""
  gumbel_rng, dropout_rng = jax.random.split(rng)
  logits = model.apply(
    {"params": params},
    batch["video"],
    batch["question_tokens"],
    batch["question_mask"],
    train=True,
    rngs={"gumbel": gumbel_rng, "dropout": dropout_rng},
  )  # [B, S, K]
  valid = (batch["answer_valid"] == 1) & (batch["answer"] >= 0)
  loss, accuracy = losses.masked_classification_loss(logits, batch["answer"], valid)
  return loss, {
    "loss/answer": loss,
    "loss/total": loss,
    "train/accuracy": accuracy,
    "train/questions_per_clip": jnp.sum(valid) / logits.shape[0],
  }


@dataclasses.dataclass(frozen=True)
class AnswerVocabulary:
  """What the training split says about answers: the vocabulary (most frequent first) and
  each question type's most frequent answer (its index; the per-type majority baseline)."""

  answers: list[str]
  majority_by_type: dict[str, int]


class VideoQATask(base.Task):
  """Open-ended video QA on the S-ViLM towers (configs/video_qa.py)."""

  name = "video_qa"
  # Both towers; the fusion module too when the checkpoint has one (a run of this task).
  init_from_map = {
    "video_encoder": "video_encoder",
    "text_encoder": "text_encoder",
    "?fusion": "fusion",
  }

  def __init__(self):
    self._vocabularies = {}

  def validate_config(self, config, vocab_size):
    video_text.validate_video_text_config(config, vocab_size)
    task = config.video_qa
    require(
      task.benchmark in BENCHMARKS,
      f"video_qa.benchmark={task.benchmark!r} is not one of {sorted(BENCHMARKS)}",
    )
    if not task.question_types:
      task.question_types = BENCHMARKS[task.benchmark]
    require(
      task.question_types in ("shapesworld", "first_word"),
      f"video_qa.question_types={task.question_types!r}: use 'shapesworld' or 'first_word'",
    )
    require(task.num_answers >= 2, f"video_qa.num_answers={task.num_answers} < 2")
    require(task.train_questions >= 1, f"video_qa.train_questions={task.train_questions} < 1")
    require(task.max_question_len >= 2, f"video_qa.max_question_len={task.max_question_len} < 2")
    text_len = config.model.text.max_len
    require(
      text_len == -1 or task.max_question_len <= text_len,
      f"video_qa.max_question_len={task.max_question_len} is longer than the text encoder's "
      f"position table (model.text.max_len={text_len})",
    )
    require(task.fusion_layers >= 1, f"video_qa.fusion_layers={task.fusion_layers} < 1")
    require(
      task.video_context in video_qa_model.VIDEO_CONTEXTS,
      f"video_qa.video_context={task.video_context!r} is not one of "
      f"{video_qa_model.VIDEO_CONTEXTS}",
    )
    require(
      task.benchmark == "shapesworld" or config.data.path,
      f"video_qa.benchmark={task.benchmark!r} reads your shards: pass --config.data.path="
      "SHARD_DIR (python -m data_pipelines.readers.video_qa)",
    )
    require(
      not (task.benchmark == "shapesworld" and config.data.train_flip),
      "data.train_flip would turn ShapesWorld's 'move left' into 'move right' without changing "
      "the answer: keep it False for video_qa on ShapesWorld",
    )

  def build_model(self, config):
    model = config.model
    scaling = dict(remat=model.remat, scan_layers=model.scan_layers)
    task = config.video_qa
    return video_qa_model.VideoQAModel(
      video={**model.video.to_dict(), **scaling},
      text={**model.text.to_dict(), **scaling},
      num_answers=task.num_answers,
      num_fusion_layers=task.fusion_layers,
      video_context=task.video_context,
      fusion_dropout=task.fusion_dropout,
      dtype=jnp.dtype(model.dtype),
    )

  def video_grid(self, config):
    return video_text.video_grid(config)

  def dummy_batch(self, config, batch_size):
    data, questions = config.data, config.video_qa.train_questions
    length = config.video_qa.max_question_len
    return {
      "video": jnp.zeros((batch_size, data.num_frames, data.resolution, data.resolution, 3)),
      "question_tokens": jnp.zeros((batch_size, questions, length), jnp.int32),
      "question_mask": jnp.ones((batch_size, questions, length), jnp.int32),
      "answer": jnp.zeros((batch_size, questions), jnp.int32),
      "answer_valid": jnp.ones((batch_size, questions), jnp.int32),
    }

  def init_variables(self, model, config, rngs, batch):
    return model.init(
      rngs, batch["video"], batch["question_tokens"], batch["question_mask"], train=False
    )

  def loss_fn(self, params, batch, rng, *, model, config):
    return compute_loss(params, batch, rng, model=model, config=config)

  def vocabulary(self, config, data: base.DataContext) -> AnswerVocabulary:
    """The answer vocabulary of the training shards (read once per task and files)."""
    files = tuple(f for dataset in data.sources.train_files for f in dataset)
    task = config.video_qa
    key = (files, task.num_answers, task.question_types)
    if key not in self._vocabularies:
      qa = video_qa_eval.read_qa(files)
      questions = [q for record, _ in qa for q in record]
      answers = [a for _, record in qa for a in record]
      if not answers:
        raise configuration.ConfigError(
          f"The training shards ({len(files)} files, e.g. {files[0]}) hold no questions: "
          "video_qa needs shards with QA pairs (python -m data_pipelines.readers.video_qa)"
        )
      vocabulary = qa_metrics.answer_vocabulary(answers, task.num_answers)
      types = [qa_metrics.question_type(q, task.question_types) for q in questions]
      covered = np.mean(qa_metrics.answer_ids(answers, vocabulary) >= 0)
      logging.info(
        "Answer vocabulary: %d answers (of %d distinct; video_qa.num_answers=%d) cover %.1f%% "
        "of the %d training questions; most frequent: %s",
        len(vocabulary),
        len(set(answers)),
        task.num_answers,
        100 * covered,
        len(answers),
        ", ".join(vocabulary[:5]),
      )
      self._vocabularies[key] = AnswerVocabulary(
        vocabulary, qa_metrics.type_majority(answers, types, vocabulary)
      )
    return self._vocabularies[key]

  def input_ops(self, config, tokenizer, *, train, vocabulary=()):
    """Clips and up to video_qa.train_questions questions each, with their answer ids in
    `vocabulary` (drawn when training; the first ones otherwise)."""
    if not vocabulary:
      raise ValueError("video_qa's input ops need the answer vocabulary (VideoQATask.vocabulary)")
    example_ops = data_setup.clip_ops(config, train=train, seed=config.seed) + [
      ops.Questions(
        vocabulary, config.video_qa.train_questions, sample=train, train=train, seed=config.seed
      )
    ]
    batch_ops = [ops.Tokenize(tokenizer, "question", config.video_qa.max_question_len)]
    return example_ops, batch_ops

  def train_ops(self, config, data):
    vocabulary = self.vocabulary(config, data).answers
    return self.input_ops(config, data.tokenizer, train=True, vocabulary=vocabulary)

  # heldout: the eval split; compositional: ShapesWorld's split of unseen colour-shape pairs.
  evaluator_types = ("heldout", "compositional")

  def build_evaluator(self, kind, config, data, *, model, mesh, params_shardings):
    files, prefix = self.evaluation_split(kind, data)
    return video_qa_eval.VideoQAEvaluator(
      config,
      model,
      mesh,
      params_shardings,
      files,
      data.tokenizer,
      self.vocabulary(config, data),
      prefix=prefix,
    )


def default_config() -> ml_collections.ConfigDict:
  """config.video_qa: the task's own keys."""
  return ml_collections.ConfigDict(
    dict(
      benchmark="shapesworld",
      num_answers=1500,  # K, the answer vocabulary's size (MSRVTT-QA practice)
      question_types="",  # "": the benchmark's ("shapesworld" or "first_word")
      # Questions per clip per training step, drawn without replacement (?).
      train_questions=8,
      # Question length in tokens, [CLS] included (longer ones are cut): ShapesWorld's take at
      # most 10; MSRVTT-QA's rarely more than 25 words.
      max_question_len=32,
      fusion_layers=2,  # cross-attention layers (?)
      # The video tokens the questions attend to: "tokens_and_groups" (?) or "tokens".
      video_context="tokens_and_groups",
      fusion_dropout=0.1,  # (?) as BERT's
      # Evaluation also answers every question with a grey video (accuracy_blank_video).
      blank_video_control=True,
    )
  )
