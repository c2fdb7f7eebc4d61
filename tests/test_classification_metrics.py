"""Action recognition and video QA metrics against hand-computed cases."""

import numpy as np
import pytest

from svilm.evaluators import classification
from svilm.evaluators import video_qa


def test_topk_counts_ties_against_the_true_class():
  logits = np.array(
    [
      [3.0, 1.0, 2.0, 0.0],  # true 0: rank 1
      [1.0, 1.0, 0.0, 0.0],  # true 1, tied with class 0: rank 2
      [0.0, 0.0, 0.0, 0.0],  # true 3, all tied: rank 4
      [0.0, 5.0, 4.0, 1.0],  # true 3: classes 1, 2 ahead -> rank 3
    ]
  )
  labels = np.array([0, 1, 3, 3])
  np.testing.assert_array_equal(classification.ranks(logits, labels), [1, 2, 4, 3])
  assert classification.topk_accuracy(logits, labels, 1) == 0.25
  assert classification.topk_accuracy(logits, labels, 2) == 0.5
  assert classification.topk_accuracy(logits, labels, 3) == 0.75
  assert classification.topk_accuracy(logits, labels, 5) == 1.0  # k > C


def test_mean_class_accuracy_leaves_out_a_class_without_samples():
  # Classes 0 (2 samples, 1 right), 1 (1 sample, right), 2 (no sample), 3 (1 sample, wrong).
  logits = np.array(
    [
      [1.0, 0.0, 0.0, 0.0],
      [0.0, 1.0, 0.0, 0.0],
      [0.0, 1.0, 0.0, 0.0],
      [0.0, 0.0, 1.0, 0.0],
    ]
  )
  labels = np.array([0, 0, 1, 3])
  # (1/2 + 1 + 0) / 3, not / 4: class 2 was never tested.
  assert classification.mean_class_accuracy(logits, labels) == pytest.approx(0.5)
  assert classification.topk_accuracy(logits, labels, 1) == 0.5


def test_views_are_averaged_per_video():
  view_logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
  video = np.array([0, 0, 1, 0])
  averaged = classification.average_views(view_logits, video, 2)
  np.testing.assert_allclose(averaged, [[1.0, 2.0 / 3.0], [0.0, 3.0]])
  with pytest.raises(ValueError, match="needs a view"):
    classification.average_views(view_logits, video, 3)
  metrics = classification.classification_metrics(averaged, np.array([0, 1]), "ar/", ks=(1,))
  assert metrics == {"ar/top1": 1.0, "ar/mean_class_accuracy": 1.0, "ar/num_videos": 2.0}


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    classification.ranks(np.zeros((1, 2)), np.array([2]))
  with pytest.raises(ValueError, match="NaN"):
    classification.ranks(np.array([[np.nan, 0.0]]), np.array([0]))


def test_answer_vocabulary_is_the_most_frequent_then_alphabetical():
  train = ["two", "red", "two", "blue", "red", "circle", "two"]
  # two x3, red x2, then blue and circle once each: blue comes first alphabetically.
  assert video_qa.answer_vocabulary(train, 3) == ["two", "red", "blue"]
  assert video_qa.answer_vocabulary(train, 10) == ["two", "red", "blue", "circle"]


def test_qa_accuracy_keeps_out_of_vocabulary_answers_in_the_denominator():
  vocabulary = ["two", "red", "blue"]
  answers = video_qa.answer_ids(["two", "red", "green", "two", "blue"], vocabulary)
  np.testing.assert_array_equal(answers, [0, 1, -1, 0, 2])
  predicted = np.array([0, 2, 0, 0, 2])  # right, wrong, (green: never right), right, right
  questions = [
    "how many objects are there?",
    "what colour is the object that grows?",
    "what colour is the object that shrinks?",
    "how many objects are there?",
    "what colour is the object that moves left?",
  ]
  types = [video_qa.question_type(q, "shapesworld") for q in questions]
  assert types == ["count", "colour", "colour", "count", "colour"]
  # Training answers by type: count "two" x2, "one" x1; colour "blue" x2, "red" x2 (a tie:
  # "blue" comes first); shape "circle" (not in the vocabulary).
  majority = video_qa.type_majority(
    ["two", "one", "two", "red", "blue", "blue", "red", "circle"],
    ["count", "count", "count", "colour", "colour", "colour", "colour", "shape"],
    vocabulary,
  )
  assert majority == {"count": 0, "colour": 2, "shape": -1}
  metrics = video_qa.qa_metrics(predicted, answers, types, majority_by_type=majority)
  assert metrics == {
    "video_qa/accuracy": 3 / 5,
    "video_qa/accuracy_colour": 1 / 3,
    "video_qa/accuracy_count": 1.0,
    "video_qa/majority_baseline": 2 / 5,  # "two" is the first vocabulary entry
    "video_qa/majority_baseline_colour": 1 / 3,  # "blue": the third colour question
    "video_qa/majority_baseline_count": 1.0,
    "video_qa/num_questions": 5.0,
  }
  assert "video_qa/majority_baseline_count" not in video_qa.qa_metrics(predicted, answers, types)
  assert video_qa.chance_level("video_qa/accuracy", metrics) == 2 / 5
  assert video_qa.chance_level("video_qa/accuracy_count", metrics) == 1.0
  assert video_qa.chance_level("video_qa/accuracy_blank_video", metrics) == 2 / 5
  assert video_qa.chance_level("video_qa/num_questions", metrics) is None


def test_first_word_question_types():
  types = [
    video_qa.question_type(q, "first_word")
    for q in ["What is a man doing?", "who is singing?", "how many cars?", "is it red?", ""]
  ]
  assert types == ["what", "who", "how", "other", "other"]
  with pytest.raises(ValueError, match="scheme"):
    video_qa.question_type("what?", "msrvtt")
