"""Open-ended video QA metrics: the answer vocabulary, accuracy, per-type accuracy, baseline.

Definitions (exact; the functions below implement them):
  answer vocabulary  the K most frequent answers of the training questions, most frequent
                     first; equal counts are ordered by the answer string, so the vocabulary
                     does not depend on the order of the training files.
  accuracy           correct / all test questions. A question is correct when the predicted
                     vocabulary entry is its answer; a question whose answer is not in the
                     vocabulary can never be correct but stays in the denominator (the
                     MSRVTT-QA convention: restricting the test set to in-vocabulary answers
                     would inflate the number).
  accuracy per type  the same over the questions of each type (`question_type`).
  majority baseline  the accuracy of always answering the most frequent training answer
                     (the first vocabulary entry), over the same test questions.
  majority per type  majority_baseline_<type>: the accuracy of always answering the most
                     frequent training answer of the question's own type (ties by the answer
                     string), over the test questions of that type: the prior a model that
                     reads only the question's type reaches, the bar for accuracy_<type>.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

from data_pipelines.shapesworld import text as shapesworld_text

OUT_OF_VOCABULARY = -1
# MSRVTT-QA and MSVD-QA type their questions by the first word (what, who, how, when, where).
FIRST_WORD_TYPES = ("what", "who", "how", "when", "where")


def answer_vocabulary(train_answers: Sequence[str], k: int) -> list[str]:
  """The K most frequent training answers, by count descending, then by the answer string."""
  counts = collections.Counter(train_answers)
  return sorted(counts, key=lambda a: (-counts[a], a))[:k]


def answer_ids(answers: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
  """int32 [N]: each answer's vocabulary index, OUT_OF_VOCABULARY (-1) when it has none."""
  index = {a: i for i, a in enumerate(vocabulary)}
  return np.array([index.get(a, OUT_OF_VOCABULARY) for a in answers], np.int32)


def question_type(question: str, scheme: str) -> str:
  """'shapesworld': count / colour / shape / action by the template's opening words;
  'first_word': what / who / how / when / where by the first word, else 'other'."""
  question = question.strip().lower()
  if scheme == "shapesworld":
    for opening, name in shapesworld_text.QUESTION_TYPES:
      if question.startswith(opening):
        return name
    return "other"
  if scheme == "first_word":
    first = question.split(" ", 1)[0] if question else ""
    return first if first in FIRST_WORD_TYPES else "other"
  raise ValueError(f"question type scheme {scheme!r}: use 'shapesworld' or 'first_word'")


def type_majority(
  train_answers: Sequence[str], train_types: Sequence[str], vocabulary: Sequence[str]
) -> dict[str, int]:
  """{type: vocabulary index of the most frequent training answer of that type} (-1 when that
  answer is outside the vocabulary)."""
  by_type = collections.defaultdict(list)
  for answer, kind in zip(train_answers, train_types, strict=True):
    by_type[kind].append(answer)
  return {
    kind: int(answer_ids(answer_vocabulary(answers, 1), vocabulary)[0])
    for kind, answers in by_type.items()
  }


def qa_metrics(
  predicted: np.ndarray,
  answers: np.ndarray,
  types: Sequence[str],
  prefix: str = "video_qa/",
  majority_by_type: dict[str, int] | None = None,
) -> dict[str, float]:
  """{prefix}accuracy, {prefix}accuracy_<type> for each type present, {prefix}majority_baseline
  and {prefix}majority_baseline_<type>, and {prefix}num_questions, from predicted vocabulary
  indices and the true answers' indices (`answer_ids`, -1 out of vocabulary). The majority
  answer is vocabulary entry 0; that of each type is majority_by_type[type] (`type_majority`;
  a type it lacks, or None, gives no majority_baseline_<type>)."""
  predicted, answers = np.asarray(predicted), np.asarray(answers)
  if predicted.shape != answers.shape or len(types) != len(answers):
    raise ValueError(f"{predicted.shape} predictions, {answers.shape} answers, {len(types)} types")
  correct = (predicted == answers) & (answers != OUT_OF_VOCABULARY)
  out = {f"{prefix}accuracy": float(correct.mean())}
  types = np.asarray(types)
  for name in sorted(set(types.tolist())):
    out[f"{prefix}accuracy_{name}"] = float(correct[types == name].mean())
  out[f"{prefix}majority_baseline"] = float(np.mean(answers == 0))
  for name in sorted(set(types.tolist()) & set(majority_by_type or {})):
    majority = majority_by_type[name]
    hits = (answers[types == name] == majority) & (majority != OUT_OF_VOCABULARY)
    out[f"{prefix}majority_baseline_{name}"] = float(np.mean(hits))
  out[f"{prefix}num_questions"] = float(len(answers))
  return out


def chance_level(key: str, results: dict[str, float]) -> float | None:
  """The baseline to read QA metric `key` of `results` against: the majority-answer baseline
  (of its type for accuracy_<type>), or None for other keys."""
  group, _, name = key.rpartition("/")
  if name == "accuracy" or name == "accuracy_blank_video":
    return results.get(f"{group}/majority_baseline")
  if name.startswith("accuracy_"):
    return results.get(f"{group}/majority_baseline_{name.removeprefix('accuracy_')}")
  return None
