"""Tests for the pretraining metrics: retrieval, pointing, temporal grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from svilm.evaluators import pointing
from svilm.evaluators import retrieval
from svilm.evaluators import temporal_grouping


# ------------------------------------------------------------------- retrieval
def test_retrieval_3x3_with_tie():
  sim = np.array([[0.9, 0.1, 0.9], [0.2, 0.5, 0.7], [0.3, 0.0, 0.8]])
  # t2v (rows): caption 0 ties with clip 2 -> rank 2 (ties count against);
  #   caption 1: 0.7 > 0.5 -> rank 2; caption 2 -> rank 1. Ranks [2, 2, 1].
  # v2t (columns): clip 0 -> 1; clip 1 -> 1; clip 2: 0.9 > 0.8 -> 2.
  out = retrieval.retrieval_metrics(sim, prefix="r/")
  assert out == pytest.approx(
    {
      "r/t2v_R@1": 1 / 3,
      "r/t2v_R@5": 1.0,
      "r/t2v_R@10": 1.0,
      "r/t2v_MdR": 2.0,
      "r/v2t_R@1": 2 / 3,
      "r/v2t_R@5": 1.0,
      "r/v2t_R@10": 1.0,
      "r/v2t_MdR": 1.0,
      "r/num_clips": 3.0,
    }
  )


def test_retrieval_known_ranks_12():
  ranks = [1, 1, 2, 3, 5, 6, 7, 10, 11, 12, 4, 8]
  n = len(ranks)
  sim = np.zeros((n, n))
  for i, r in enumerate(ranks):
    sim[i, i] = 0.5
    others = [j for j in range(n) if j != i][: r - 1]
    sim[i, others] = 1.0  # r - 1 clips score above the true one
  out = retrieval.retrieval_metrics(sim)
  assert out["retrieval/t2v_R@1"] == pytest.approx(2 / 12)
  # ranks <= 5: 1, 1, 2, 3, 5, 4 -> 6; ranks <= 10: all but 11, 12 -> 10.
  assert out["retrieval/t2v_R@5"] == pytest.approx(6 / 12)
  assert out["retrieval/t2v_R@10"] == pytest.approx(10 / 12)
  # Sorted: 1 1 2 3 4 5 | 6 7 8 10 11 12 -> median (5 + 6) / 2.
  assert out["retrieval/t2v_MdR"] == 5.5


def test_retrieval_constant_scores_do_not_flatter():
  out = retrieval.retrieval_metrics(np.ones((4, 4)))
  # Every candidate ties with the truth, so every rank is 4.
  assert out["retrieval/t2v_R@1"] == 0.0
  assert out["retrieval/v2t_MdR"] == 4.0


def test_retrieval_rejects_bad_input():
  with pytest.raises(ValueError, match="square"):
    retrieval.retrieval_metrics(np.zeros((2, 3)))
  with pytest.raises(ValueError, match="NaN"):
    retrieval.retrieval_metrics(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_distinct_caption_indices():
  caps = ["a dog", b"a cat", "a dog", b"a dog", "A dog", "a cat "]
  np.testing.assert_array_equal(retrieval.distinct_caption_indices(caps), [0, 1, 4, 5])
  assert retrieval.distinct_caption_indices([]).shape == (0,)


# -------------------------------------------------------------------- pointing
def _pointing_inputs():
  """Two clips, P=2, Hp=Wp=2, M=2, T=4 frames, K=2 nouns (second padded)."""
  m1 = np.array(
    [
      0.1,
      0.7,
      0.1,
      0.1,  # position 0: peak token 1 = (0, 1)
      0.1,
      0.1,
      0.6,
      0.2,
    ]
  )  # position 1: peak token 2 = (1, 0)
  # Group 0 = 1 - group 1: peaks at token 0 = (0, 0) (ties -> first).
  soft = np.stack([1 - m1, m1], axis=-1)[None].repeat(2, axis=0)  # [2, 8, 2]
  # Clip 0: noun (1, 0) is closest to group 1; clip 1: to group 0.
  group = np.array([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
  nouns = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2)
  valid = np.array([[1, 0], [1, 0]])
  box = np.array(
    [
      [0.0, 0.5, 0.5, 1.0],  # frame 0: top-right quadrant
      [0.0, 0.0, 0.5, 0.5],  # frame 1: top-left quadrant
      [0.75, 0.25, 1.0, 0.5],  # frame 2: corner at (0.75, 0.25)
      [0.0, 0.0, 1.0, 1.0],
    ]
  )  # frame 3: whole frame, invisible
  boxes = np.broadcast_to(box, (2, 2, 4, 4))
  visible = np.broadcast_to([1, 1, 1, 0], (2, 2, 4))
  return soft, group, nouns, valid, boxes, visible


def _run_pointing(seed=0, **overrides):
  soft, group, nouns, valid, boxes, visible = _pointing_inputs()
  args = dict(
    soft_assignment=soft,
    grid=(2, 2, 2),
    frames_per_position=2,
    noun_emb=nouns,
    noun_valid=valid,
    group_emb=group,
    boxes=boxes,
    visible=visible,
    rng=np.random.default_rng(seed),
  )
  args.update(overrides)
  return pointing.pointing_accuracy(**args)


# Hits per frame 0..2 (frame 3 invisible, padded nouns skipped):
#   group 1: centres (0.25, 0.75), (0.25, 0.75), (0.75, 0.25)
#            -> hit, miss (x 0.75 > 0.5), hit (on the corner, inclusive): 2/3
#   group 0: centre (0.25, 0.25) -> miss (x < 0.5), hit, miss (y < 0.75): 1/3
_HITS_BY_GROUP = {0: 1, 1: 2}


def test_pointing_hand_example():
  out = _run_pointing()
  # Clip 0 uses group 1 (2 hits), clip 1 uses group 0 (1 hit): 3 / 6.
  assert out["grounding/num_pointing"] == 6.0
  assert out["grounding/pointing_acc"] == pytest.approx(0.5)


def test_pointing_group_tie_picks_lowest_index():
  group = np.array([[[1.0, 0.0], [1.0, 0.0]]] * 2)
  out = _run_pointing(group_emb=group)
  # Both clips use group 0: 1 hit each out of 3 pairs each.
  assert out["grounding/pointing_acc"] == pytest.approx(1 / 3)


def test_pointing_random_baseline_reproducible():
  outcomes = set()
  for seed in range(8):
    draws = np.random.default_rng(seed).integers(0, 2, size=2)
    expected = sum(_HITS_BY_GROUP[int(d)] for d in draws) / 6
    value = _run_pointing(seed)["grounding/pointing_acc_random"]
    assert value == pytest.approx(expected)
    assert value == _run_pointing(seed)["grounding/pointing_acc_random"]
    outcomes.add(round(value, 6))
  assert len(outcomes) > 1  # the baseline really depends on the draw


def test_pointing_no_pairs_is_nan():
  out = _run_pointing(visible=np.zeros((2, 2, 4)))
  assert out["grounding/num_pointing"] == 0.0
  assert math.isnan(out["grounding/pointing_acc"])
  assert math.isnan(out["grounding/pointing_acc_random"])


def test_pointing_rejects_frame_mismatch():
  with pytest.raises(ValueError, match="frames_per_position"):
    _run_pointing(frames_per_position=3)


# ----------------------------------------------------------- temporal grouping
def _unit(degrees):
  a = np.deg2rad(degrees)
  return np.stack([np.cos(a), np.sin(a)], axis=-1)


def test_two_means_simple_and_iterated():
  x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
  np.testing.assert_array_equal(temporal_grouping.two_means(x), [0, 0, 1, 1])
  # Init: centres at 0 and 90 degrees; 44 is nearer 0 on the first pass. The
  # updated centre 0 (mean of 0,0,0,0,44 ~ 9 deg) is then farther from 44
  # than centre 1 (mean of 46,47,48,90 ~ 58 deg), so 44 moves to cluster 1.
  x = _unit([0, 0, 0, 0, 44, 46, 47, 48, 90])
  np.testing.assert_array_equal(
    temporal_grouping.two_means(x, num_iters=1), [0, 0, 0, 0, 0, 1, 1, 1, 1]
  )
  np.testing.assert_array_equal(temporal_grouping.two_means(x), [0, 0, 0, 0, 1, 1, 1, 1, 1])


def test_two_means_identical_rows_all_zero():
  x = np.array([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])  # same direction
  np.testing.assert_array_equal(temporal_grouping.two_means(x), [0, 0, 0])


def _grouping_inputs():
  # Clip 0: foreground (near 0 deg) at positions 0, 1; background near 90.
  # Clip 1: position 0 is background; foreground at positions 1, 2.
  clip = np.stack([_unit([0, 5, 85, 90]) * 3.0, _unit([88, 2, 4, 90])])
  mask = np.array([[1, 1, 0, 0], [0, 1, 1, 0]])
  return clip, mask


def test_temporal_grouping_accuracy_perfect_and_reversed():
  clip, mask = _grouping_inputs()
  rng = np.random.default_rng(0)
  good = temporal_grouping.temporal_grouping_accuracy(clip, np.array([[2.0, 0.0]] * 2), mask, rng)
  assert good["temporal_grouping/accuracy"] == 1.0
  bad = temporal_grouping.temporal_grouping_accuracy(clip, np.array([[0.0, 1.0]] * 2), mask, rng)
  assert bad["temporal_grouping/accuracy"] == 0.0


def test_temporal_grouping_accuracy_pooled_partial():
  # One position (20 deg, truly background) clusters with the foreground.
  clip = np.stack([_unit([0, 20, 90, 88]), _unit([0, 3, 90, 87])])
  mask = np.array([[1, 0, 0, 0], [1, 1, 0, 0]])
  out = temporal_grouping.temporal_grouping_accuracy(
    clip, np.array([[1.0, 0.0]] * 2), mask, np.random.default_rng(0)
  )
  assert out["temporal_grouping/accuracy"] == pytest.approx(7 / 8)


def test_temporal_grouping_accuracy_random_reproducible():
  clip, mask = _grouping_inputs()
  text = np.array([[1.0, 0.0]] * 2)
  outcomes = set()
  for seed in range(8):
    draws = np.random.default_rng(seed).integers(0, 2, size=2)
    # Cluster 0 holds position 0: foreground in clip 0, background in clip 1.
    expected = (float(draws[0] == 0) + float(draws[1] == 1)) / 2
    out = temporal_grouping.temporal_grouping_accuracy(
      clip, text, mask, np.random.default_rng(seed)
    )
    assert out["temporal_grouping/accuracy_random"] == expected
    outcomes.add(expected)
  assert len(outcomes) > 1
