"""The final metrics table: each metric beside its chance or random baseline (hand-computed)."""

import pytest

from svilm.evaluators import classification
from svilm.evaluators import retrieval
from svilm.evaluators import summary


def test_chance_of_ranking_metrics_is_that_of_a_uniform_rank():
  matched = {"retrieval/num_clips": 5.0}
  assert retrieval.chance_level("retrieval/t2v_R@1", matched) == pytest.approx(1 / 5)
  assert retrieval.chance_level("retrieval/v2t_R@5", matched) == 1.0
  assert retrieval.chance_level("retrieval/v2t_R@10", matched) == 1.0  # min(10 / 5, 1)
  assert retrieval.chance_level("retrieval/t2v_MdR", matched) == 3.0  # (5 + 1) / 2
  several = {"msrvtt/num_videos": 1000.0, "msrvtt/num_captions": 20000.0}
  assert retrieval.chance_level("msrvtt/t2v_R@10", several) == pytest.approx(0.01)
  assert retrieval.chance_level("msrvtt/t2v_MnR", several) == 500.5
  # v2t with several right captions per video: not a uniform rank, so no number is claimed.
  assert retrieval.chance_level("msrvtt/v2t_R@1", several) is None
  assert retrieval.chance_level("grounding/pointing_acc", matched) is None


def test_chance_of_classification_metrics_is_that_of_a_random_ranking():
  results = {"ar/num_classes": 9.0}
  assert classification.chance_level("ar/top1", results) == pytest.approx(1 / 9)
  assert classification.chance_level("ar/single_view_top1", results) == pytest.approx(1 / 9)
  assert classification.chance_level("ar/top5", results) == pytest.approx(5 / 9)
  assert classification.chance_level("ar/top10", results) == 1.0
  assert classification.chance_level("ar/mean_class_accuracy", results) == pytest.approx(1 / 9)
  assert classification.chance_level("ar/num_videos", results) is None
  assert classification.chance_level("other/top1", results) is None


def test_table_puts_random_baselines_beside_their_metric():
  results = {
    "step": 6,
    "retrieval/t2v_R@1": 0.4,
    "retrieval/num_clips": 5.0,
    "grounding/pointing_acc": 0.55769,
    "grounding/pointing_acc_random": 0.11538,
  }
  lines = summary.format_table(results, "/w/eval_results.json").splitlines()
  assert lines[0] == "Final metrics at step 6 (all in /w/eval_results.json):"
  rows = [line.split() for line in lines[2:]]
  assert rows == [
    ["retrieval/t2v_R@1", "0.4", "0.2"],
    ["retrieval/num_clips", "5"],
    ["grounding/pointing_acc", "0.5577", "0.1154"],
  ]
