"""Soft-NMS of temporal segments against hand-computed cases (each states its arithmetic)."""

import math

import numpy as np
import pytest

from svilm.evaluators.segment_nms import soft_nms
from svilm.evaluators.temporal_localization import segment_tiou


def _nms(segments, scores, labels=None, **kwargs):
  segments = np.asarray(segments, np.float64)
  labels = np.zeros(len(segments), np.int64) if labels is None else np.asarray(labels)
  return soft_nms(segments, np.asarray(scores, np.float64), labels, **kwargs)


def _classic_nms(segments, scores, threshold):
  """Textbook hard NMS: by score (stable), keep a segment unless a kept one has tIoU >= threshold."""
  kept = []
  for i in np.argsort(-scores, kind="stable"):
    if all(segment_tiou(segments[k], segments[i : i + 1])[0] < threshold for k in kept):
      kept.append(i)
  return np.array(kept, np.int64)


def test_gaussian_decays_an_overlapping_lower_segment():
  # [0,10] and [5,15]: intersection 5, union 10 + 10 - 5 = 15, tIoU 1/3.
  # [5,15]: 0.8 * exp(-(1/3)^2 / 0.5) = 0.8 * exp(-2/9) ~ 0.6406.
  segments, scores, labels = _nms([[0, 10], [5, 15]], [0.9, 0.8])
  np.testing.assert_array_equal(segments, [[0, 10], [5, 15]])
  np.testing.assert_allclose(scores, [0.9, 0.8 * math.exp(-2 / 9)], rtol=1e-12)
  np.testing.assert_array_equal(labels, [0, 0])


def test_gaussian_sigma_and_cumulative_decay():
  # sigma = 0.25: [5,15] becomes 0.8 * exp(-(1/9) / 0.25) = 0.8 * exp(-4/9).
  _, scores, _ = _nms([[0, 10], [5, 15]], [0.9, 0.8], sigma=0.25)
  np.testing.assert_allclose(scores, [0.9, 0.8 * math.exp(-4 / 9)], rtol=1e-12)
  # [5,25] overlaps [0,10] (intersection 5, union 10 + 20 - 5 = 25, tIoU 0.2) and [20,30] (the
  # same: 0.2); both are picked before it, so it decays twice:
  # 0.7 * exp(-0.04 / 0.5) * exp(-0.04 / 0.5) = 0.7 * exp(-0.16) ~ 0.5965.
  segments, scores, _ = _nms([[0, 10], [20, 30], [5, 25]], [0.9, 0.8, 0.7])
  np.testing.assert_array_equal(segments, [[0, 10], [20, 30], [5, 25]])
  np.testing.assert_allclose(scores, [0.9, 0.8, 0.7 * math.exp(-0.16)], rtol=1e-12)


def test_linear_below_at_and_above_the_threshold():
  # Below: [0,10] vs [5,15] tIoU 1/3 < 0.5: 0.8 unchanged.
  _, scores, _ = _nms([[0, 10], [5, 15]], [0.9, 0.8], method="linear")
  np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-12)
  # Above: [0,10] vs [2,12]: intersection 8, union 12, tIoU 2/3 >= 0.5: 0.8 * (1 - 2/3) = 0.8/3.
  _, scores, _ = _nms([[0, 10], [2, 12]], [0.9, 0.8], method="linear")
  np.testing.assert_allclose(scores, [0.9, 0.8 / 3], rtol=1e-12)
  # At: [0,10] vs [0,5]: intersection 5, union 10, tIoU exactly 0.5 >= 0.5: 0.8 * 0.5 = 0.4.
  _, scores, _ = _nms([[0, 10], [0, 5]], [0.9, 0.8], method="linear")
  np.testing.assert_allclose(scores, [0.9, 0.4], rtol=1e-12)
  # The threshold is a parameter: at 0.7, tIoU 2/3 is below it and 0.8 stays.
  _, scores, _ = _nms([[0, 10], [2, 12]], [0.9, 0.8], method="linear", iou_threshold=0.7)
  np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-12)


def test_hard_is_classic_nms():
  # [3,13] vs [0,10]: intersection 7, union 13, tIoU 7/13 ~ 0.54 >= 0.5: removed.
  # [6,16] vs [0,10]: intersection 4, union 16, tIoU 0.25: kept, although its tIoU with the
  # removed [3,13] is 7/13 (a removed segment suppresses nothing).
  # [20,30]: no overlap, kept with its score.
  segments, scores, labels = _nms(
    [[0, 10], [3, 13], [6, 16], [20, 30]], [0.9, 0.8, 0.7, 0.6], method="hard"
  )
  np.testing.assert_array_equal(segments, [[0, 10], [6, 16], [20, 30]])
  np.testing.assert_allclose(scores, [0.9, 0.7, 0.6])
  np.testing.assert_array_equal(labels, [0, 0, 0])
  # Against the textbook loop on random segments; even min_score 0 does not keep a removed one.
  rng = np.random.default_rng(0)
  starts = rng.uniform(0, 100, 60)
  segments = np.stack([starts, starts + rng.uniform(0, 30, 60)], axis=1)
  scores = rng.uniform(0, 1, 60)
  for threshold in (0.3, 0.5, 0.7):
    expected = _classic_nms(segments, scores, threshold)
    got_segments, got_scores, _ = _nms(
      segments, scores, method="hard", iou_threshold=threshold, min_score=0.0, max_segments=0
    )
    np.testing.assert_array_equal(got_segments, segments[expected])
    np.testing.assert_array_equal(got_scores, scores[expected])


def test_class_wise_leaves_other_classes_alone_and_class_agnostic_does_not():
  # [5,15] (class 1) overlaps [0,10] (class 0) with tIoU 1/3.
  segments = [[0, 10], [5, 15]]
  # Per class: nothing of class 1 was picked before it, 0.8 stays.
  out_segments, scores, labels = _nms(segments, [0.9, 0.8], [0, 1])
  np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-12)
  np.testing.assert_array_equal(labels, [0, 1])
  np.testing.assert_array_equal(out_segments, segments)
  # Class-agnostic: 0.8 * exp(-(1/9) / 0.5) = 0.8 * exp(-2/9).
  _, scores, labels = _nms(segments, [0.9, 0.8], [0, 1], class_agnostic=True)
  np.testing.assert_allclose(scores, [0.9, 0.8 * math.exp(-2 / 9)], rtol=1e-12)
  np.testing.assert_array_equal(labels, [0, 1])
  # Hard, [2,12] (tIoU 2/3 with [0,10]): kept per class, removed class-agnostic.
  _, scores, labels = _nms([[0, 10], [2, 12]], [0.9, 0.8], [3, 7], method="hard")
  np.testing.assert_array_equal(labels, [3, 7])
  _, scores, labels = _nms(
    [[0, 10], [2, 12]], [0.9, 0.8], [3, 7], method="hard", class_agnostic=True
  )
  np.testing.assert_array_equal(labels, [3])


def test_min_score_drops_decayed_and_low_initial_scores():
  # [0,10] 0.002 duplicates [0,10] 0.9 (tIoU 1): 0.002 * exp(-1 / 0.5) ~ 0.00027 < 1e-3: dropped.
  # [50,60] 0.0005 < 1e-3 from the start: dropped. [70,80] 0.001 == min_score: kept.
  segments, scores, _ = _nms(
    [[0, 10], [0, 10], [50, 60], [70, 80]], [0.9, 0.002, 0.0005, 0.001], max_segments=0
  )
  np.testing.assert_array_equal(segments, [[0, 10], [70, 80]])
  np.testing.assert_allclose(scores, [0.9, 0.001])
  # With min_score 1e-4, the decayed duplicate (0.002 * exp(-2) ~ 2.7e-4) survives, last.
  segments, scores, _ = _nms([[0, 10], [0, 10]], [0.9, 0.002], min_score=1e-4)
  np.testing.assert_allclose(scores, [0.9, 0.002 * math.exp(-2)], rtol=1e-12)


def test_max_segments_keeps_the_top_scores_in_order():
  # Disjoint segments, so no decay: scores sorted .9 (1), .7 (3), .5 (2), .3 (0), .1 (4).
  segments = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
  scores = [0.3, 0.9, 0.5, 0.7, 0.1]
  labels = [2, 0, 1, 0, 2]
  out_segments, out_scores, out_labels = _nms(segments, scores, labels, max_segments=3)
  np.testing.assert_array_equal(out_segments, [[2, 3], [6, 7], [4, 5]])
  np.testing.assert_allclose(out_scores, [0.9, 0.7, 0.5])
  np.testing.assert_array_equal(out_labels, [0, 0, 1])
  for cap in (0, -1, 5, 10):  # no cap, or a cap above N: all five
    _, out_scores, _ = _nms(segments, scores, labels, max_segments=cap)
    np.testing.assert_allclose(out_scores, [0.9, 0.7, 0.5, 0.3, 0.1])


def test_equal_scores_go_by_input_index():
  # Across classes: index 0 (class 5) before index 1 (class 0), though 0 < 5.
  _, _, labels = _nms([[0, 1], [2, 3]], [0.5, 0.5], [5, 0])
  np.testing.assert_array_equal(labels, [5, 0])
  # Within a class, two identical segments of equal score: index 0 is picked and index 1 decays
  # by tIoU 1: 0.5 * exp(-2).
  segments, scores, labels = _nms([[0, 10], [0, 10]], [0.5, 0.5], [1, 2], class_agnostic=True)
  np.testing.assert_array_equal(labels, [1, 2])
  np.testing.assert_allclose(scores, [0.5, 0.5 * math.exp(-2)], rtol=1e-12)


def test_a_decayed_segment_is_reranked_below_a_later_one():
  # [1,11] vs [0,10]: intersection 9, union 11, tIoU 9/11; 0.85 * exp(-(81/121) / 0.5) =
  # 0.85 * exp(-162/121) ~ 0.2229 < 0.5, so disjoint [30,40] (0.5) comes before it.
  segments, scores, _ = _nms([[0, 10], [1, 11], [30, 40]], [0.9, 0.85, 0.5])
  np.testing.assert_array_equal(segments, [[0, 10], [30, 40], [1, 11]])
  np.testing.assert_allclose(scores, [0.9, 0.5, 0.85 * math.exp(-162 / 121)], rtol=1e-12)
  # Capped at 2, the decayed one is the one cut.
  segments, _, _ = _nms([[0, 10], [1, 11], [30, 40]], [0.9, 0.85, 0.5], max_segments=2)
  np.testing.assert_array_equal(segments, [[0, 10], [30, 40]])


def test_zero_length_segments():
  # Two identical points: tIoU 1 (not segment_tiou's 0), 0.8 * exp(-2). A different point and a
  # point inside [0,10] have tIoU 0 with everything: unchanged, and nothing is NaN.
  segments, scores, _ = _nms(
    [[5, 5], [5, 5], [6, 6], [0, 10]], [0.9, 0.8, 0.7, 0.6], max_segments=0
  )
  np.testing.assert_array_equal(segments, [[5, 5], [6, 6], [0, 10], [5, 5]])
  np.testing.assert_allclose(scores, [0.9, 0.7, 0.6, 0.8 * math.exp(-2)], rtol=1e-12)
  # Hard NMS removes the duplicate point.
  segments, _, _ = _nms([[5, 5], [5, 5], [6, 6]], [0.9, 0.8, 0.7], method="hard")
  np.testing.assert_array_equal(segments, [[5, 5], [6, 6]])


def test_empty_input():
  for args in (
    (np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64)),
    ([], [], []),
  ):
    segments, scores, labels = soft_nms(*args)
    assert segments.shape == (0, 2) and segments.dtype == np.float64
    assert scores.shape == (0,) and scores.dtype == np.float64
    assert labels.shape == (0,) and labels.dtype == np.int64
  # Everything below min_score: empty too.
  segments, scores, labels = _nms([[0, 1]], [1e-5])
  assert segments.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)


def test_labels_dtype_is_kept():
  _, _, labels = _nms([[0, 1], [2, 3]], [0.4, 0.6], np.array([3, 4], np.int32))
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, [4, 3])


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"method": "soft"}, "Unknown Soft-NMS method 'soft'"),
    ({"sigma": 0.0}, "sigma must be > 0"),
    ({"sigma": -1.0}, "sigma must be > 0"),
    ({"iou_threshold": 0.0}, "iou_threshold must be in"),
    ({"iou_threshold": 1.5}, "iou_threshold must be in"),
    ({"scores": [0.9]}, r"scores must be \[N\] = \[2\]"),
    ({"labels": [0, 0, 0]}, r"labels must be \[N\] = \[2\]"),
    ({"labels": [0.0, 1.0]}, "labels must be integer"),
    ({"segments": [[0, 1, 2], [3, 4, 5]]}, r"segments must be \[N, 2\]"),
    ({"segments": [[0, 1], [5, 4]]}, "segment 1 ends before it starts"),
    ({"scores": [0.9, float("nan")]}, "must be finite"),
    ({"scores": [0.9, -0.1]}, "scores must be >= 0"),
  ],
)
def test_bad_arguments(kwargs, match):
  args = {"segments": [[0, 1], [2, 3]], "scores": [0.9, 0.8], "labels": [0, 1]}
  options = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    soft_nms(args["segments"], args["scores"], args["labels"], **options)


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_a_cap_is_the_prefix_of_the_uncapped_result_at_scale(method):
  # 2000 segments in 5 classes: the capped run (which stops each class after max_segments picks)
  # is exactly the first 100 of the uncapped one, whose scores never increase.
  rng = np.random.default_rng(1)
  n = 2000
  starts = rng.uniform(0, 500, n)
  segments = np.stack([starts, starts + rng.uniform(0, 60, n)], axis=1)
  scores = rng.uniform(0, 1, n)
  labels = rng.integers(0, 5, n)
  full = soft_nms(segments, scores, labels, method=method, max_segments=0)
  capped = soft_nms(segments, scores, labels, method=method, max_segments=100)
  assert len(capped[0]) == 100
  assert np.all(np.diff(full[1]) <= 0)
  for a, b in zip(capped, full):
    np.testing.assert_array_equal(a, b[:100])
