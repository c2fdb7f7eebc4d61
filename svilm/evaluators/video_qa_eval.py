"""Open-ended video QA evaluation: every question of every clip of a split (metrics:
svilm/evaluators/video_qa.py).

Each clip is read once, as its evaluation clip (config.data's centre clip) with all its
questions: the split is scanned first for its largest question count S, and every clip's
questions fill an [S] row (padding marked invalid), so none is dropped. The video encoder runs
once per clip and the fusion module once per question; the prediction is the argmax over the
answer vocabulary. Reported with `prefix` (e.g. "video_qa/"): accuracy, accuracy_<type>,
majority_baseline(_<type>) and num_questions from `video_qa.qa_metrics`, and
  answer_coverage   the fraction of the split's questions whose answer is in the vocabulary
                    (the ceiling of accuracy).
With video_qa.blank_video_control, also accuracy_blank_video: the same model with every clip
replaced by a uniform one (every pixel the batch's mean value, whatever the normalisation), the
control that shows how much of the accuracy comes from the video rather than from the question
alone.

Every host reads the whole split and keeps its rows of each global batch (as the other
evaluators do), so the numbers do not depend on the number of hosts or devices.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from data_pipelines import input_pipeline
from data_pipelines import ops
from svilm import data_setup
from svilm import sharding
from svilm.evaluators import video_qa


def read_qa(files: Sequence[str], max_records: int = 0) -> list[tuple[list[str], list[str]]]:
  """(questions, answers) of each record of `files` in the evaluation pipeline's order (the
  first `max_records` when > 0), parsing only the two QA lists (no frames are decoded)."""
  spec = {k: tf.io.VarLenFeature(tf.string) for k in ("qa_question", "qa_answer")}

  def parse(serialized):
    context, _ = tf.io.parse_single_sequence_example(serialized, context_features=spec)
    return {k: tf.sparse.to_dense(v) for k, v in context.items()}

  ds = input_pipeline.record_stream(files, train=False, seed=0)
  if max_records:
    ds = ds.take(max_records)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  out = []
  for record in ds.as_numpy_iterator():
    questions = [q.decode() for q in record["qa_question"]]
    answers = [a.decode() for a in record["qa_answer"]]
    count = min(len(questions), len(answers))  # as ops.Questions reads them
    out.append((questions[:count], answers[:count]))
  return out


def _predict(params, video, question_tokens, question_mask, *, model, blank):
  if blank:
    video = jnp.full_like(video, jnp.mean(video))
  logits = model.apply({"params": params}, video, question_tokens, question_mask, train=False)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, S]


class VideoQAEvaluator:
  """`run(params)` -> {prefix + metric: value} over the questions of `eval_files`."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    model,
    mesh,
    params_shardings,
    eval_files,
    tokenizer,
    vocabulary,  # svilm.tasks.video_qa.AnswerVocabulary
    *,
    prefix: str,
  ):
    self._config, self._mesh, self._prefix = config, mesh, prefix
    self._files, self._tokenizer = list(eval_files), tokenizer
    self._vocabulary = list(vocabulary.answers)
    self._majority_by_type = dict(vocabulary.majority_by_type)
    task = config.video_qa
    qa = read_qa(self._files, config.eval.max_clips)
    if not any(questions for questions, _ in qa):
      raise ValueError(
        f"The evaluation split ({len(self._files)} files, e.g. {self._files[0]}) holds no "
        "questions: build it with a QA reader (python -m data_pipelines.readers.video_qa)"
      )
    self._num_questions = max(len(questions) for questions, _ in qa)
    self._answers = video_qa.answer_ids([a for _, ans in qa for a in ans], self._vocabulary)
    self._types = [
      video_qa.question_type(q, task.question_types) for questions, _ in qa for q in questions
    ]
    self._predict = {
      blank: sharding.jit_evaluation(
        functools.partial(_predict, model=model, blank=blank),
        config,
        mesh,
        params_shardings,
        [True] * 3,
      )
      for blank in ((False, True) if task.blank_video_control else (False,))
    }

  def _dataset(self):
    config = self._config
    return input_pipeline.make_dataset_from_ops(
      self._files,
      example_ops=data_setup.clip_ops(config, train=False, seed=config.seed)
      + [ops.Questions(self._vocabulary, self._num_questions)],
      batch_ops=[ops.Tokenize(self._tokenizer, "question", config.video_qa.max_question_len)],
      batch_size=config.eval.batch_size // jax.process_count(),
      train=False,
      max_examples=config.eval.max_clips,
      host_slice=(jax.process_index(), jax.process_count()),
    )

  def predictions(self, params) -> dict[bool, np.ndarray]:
    """{blank: predicted vocabulary index of every question of the split, in file order}."""
    predicted = {blank: [] for blank in self._predict}
    answers = []
    for local in input_pipeline.as_numpy(self._dataset()):
      keys = ("video", "question_tokens", "question_mask")
      inputs = sharding.to_global({k: local[k] for k in keys}, self._mesh)
      rows = multihost_utils.process_allgather(
        {k: local[k] for k in ("answer", "answer_valid", "valid")}, tiled=True
      )
      # Real questions of real clips, row by row: the order of read_qa's flat lists.
      keep = (np.asarray(rows["answer_valid"]) == 1) & (np.asarray(rows["valid"])[:, None] == 1)
      answers.append(np.asarray(rows["answer"])[keep])
      for blank, predict in self._predict.items():
        predicted[blank].append(np.asarray(predict(params, *(inputs[k] for k in keys)))[keep])
    answers = np.concatenate(answers)
    if not np.array_equal(answers, self._answers):
      raise RuntimeError(
        f"The evaluation pipeline read {len(answers)} questions whose answers differ from the "
        f"{len(self._answers)} of the split's scan: the two reads disagree about the split"
      )
    return {blank: np.concatenate(parts) for blank, parts in predicted.items()}

  def run(self, params) -> dict[str, float]:
    predicted = self.predictions(params)
    prefix = self._prefix
    out = video_qa.qa_metrics(
      predicted[False], self._answers, self._types, prefix, self._majority_by_type
    )
    out[f"{prefix}answer_coverage"] = float(np.mean(self._answers != video_qa.OUT_OF_VOCABULARY))
    if True in predicted:
      blank = (predicted[True] == self._answers) & (self._answers != video_qa.OUT_OF_VOCABULARY)
      out[f"{prefix}accuracy_blank_video"] = float(np.mean(blank))
    return out
