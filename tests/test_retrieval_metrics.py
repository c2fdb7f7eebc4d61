"""Tests for `retrieval.multi_caption_retrieval_metrics` (several captions)."""

from __future__ import annotations

import numpy as np
import pytest

from svilm.evaluators import retrieval

# 3 videos, 5 captions; rows are captions, columns are videos.
#                   v0    v1    v2
_SIM = np.array(
  [
    [0.9, 0.65, 0.1],  # c0 -> v0
    [0.9, 0.7, 0.55],  # c1 -> v0
    [0.6, 0.6, 0.7],  # c2 -> v1
    [0.1, 0.2, 0.7],  # c3 -> v2
    [0.8, 0.7, 0.5],
  ]
)  # c4 -> v2
_CAPTION_VIDEO = np.array([0, 0, 1, 2, 2])


def _reference(sim, caption_video):
  """The module docstring's definition, written as literally as possible."""
  sim = np.asarray(sim, dtype=np.float64)
  num_captions, num_videos = sim.shape
  t2v = []
  for c in range(num_captions):
    own = sim[c, caption_video[c]]
    t2v.append(1 + sum(sim[c, v] >= own for v in range(num_videos) if v != caption_video[c]))
  v2t = []
  for v in range(num_videos):
    ranks = []
    for c in range(num_captions):
      if caption_video[c] != v:
        continue
      ranks.append(
        1 + sum(sim[o, v] >= sim[c, v] for o in range(num_captions) if caption_video[o] != v)
      )
    v2t.append(min(ranks))
  return np.array(t2v), np.array(v2t)


def _expected(t2v, v2t, num_videos, num_captions, prefix="retrieval/"):
  out = {}
  for direction, ranks in (("t2v", t2v), ("v2t", v2t)):
    ranks = np.asarray(ranks)
    for k in (1, 5, 10):
      out[f"{prefix}{direction}_R@{k}"] = float(np.mean(ranks <= k))
    out[f"{prefix}{direction}_MdR"] = float(np.median(ranks))
    out[f"{prefix}{direction}_MnR"] = float(np.mean(ranks))
  out[f"{prefix}num_videos"] = float(num_videos)
  out[f"{prefix}num_captions"] = float(num_captions)
  return out


def test_hand_computed_3_videos_5_captions():
  # t2v (rows; competitors are the other videos, ties count against):
  #   c0: own 0.9 vs 0.65, 0.1            -> rank 1
  #   c1: own 0.9 vs 0.7, 0.55            -> rank 1
  #   c2: own 0.6 vs v0 0.6 (tie), v2 0.7 -> rank 3
  #   c3: own 0.7 vs 0.1, 0.2             -> rank 1
  #   c4: own 0.5 vs v0 0.8, v1 0.7       -> rank 3
  #   ranks [1, 1, 3, 1, 3]: R@1 3/5, R@5 = R@10 = 1, MdR 1, MnR 9/5.
  # v2t (columns; competitors are captions of OTHER videos; a video's rank is
  # the best rank over its own captions):
  #   v0: column [0.9, 0.9, 0.6, 0.1, 0.8]; own c0 = c1 = 0.9 tie with each
  #       other but are not competitors; others 0.6, 0.1, 0.8 < 0.9 -> 1.
  #   v1: column [0.65, 0.7, 0.6, 0.2, 0.7]; own c2 0.6; c0 0.65, c1 0.7 and
  #       c4 0.7 >= 0.6 -> rank 4 (counted per caption: v0 contributes two;
  #       a per-video count as in CLIP4Clip's max-pooling would give 3).
  #   v2: column [0.1, 0.55, 0.7, 0.7, 0.5]; own c3 0.7: c2 0.7 ties -> 2;
  #       own c4 0.5: c1 0.55, c2 0.7 -> 3; best of the two -> rank 2.
  #   ranks [1, 4, 2]: R@1 1/3, R@5 = R@10 = 1, MdR 2, MnR 7/3.
  out = retrieval.multi_caption_retrieval_metrics(_SIM, _CAPTION_VIDEO)
  assert out == pytest.approx(
    {
      "retrieval/t2v_R@1": 3 / 5,
      "retrieval/t2v_R@5": 1.0,
      "retrieval/t2v_R@10": 1.0,
      "retrieval/t2v_MdR": 1.0,
      "retrieval/t2v_MnR": 9 / 5,
      "retrieval/v2t_R@1": 1 / 3,
      "retrieval/v2t_R@5": 1.0,
      "retrieval/v2t_R@10": 1.0,
      "retrieval/v2t_MdR": 2.0,
      "retrieval/v2t_MnR": 7 / 3,
      "retrieval/num_videos": 3.0,
      "retrieval/num_captions": 5.0,
    }
  )
  assert all(isinstance(value, float) for value in out.values())
  t2v, v2t = _reference(_SIM, _CAPTION_VIDEO)
  np.testing.assert_array_equal(t2v, [1, 1, 3, 1, 3])
  np.testing.assert_array_equal(v2t, [1, 4, 2])


def test_prefix_and_key_names():
  out = retrieval.multi_caption_retrieval_metrics(_SIM, _CAPTION_VIDEO.tolist(), prefix="msvd/")
  assert sorted(out) == sorted(
    [f"msvd/{d}_{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]
    + ["msvd/num_videos", "msvd/num_captions"]
  )


@pytest.mark.parametrize("num_videos,per_video", [(4, 3), (5, 3), (2, 1)])
def test_constant_scores_do_not_flatter(num_videos, per_video):
  # Every score ties: t2v rank = num_videos (all other videos count against);
  # v2t rank = 1 + all captions of the other videos.
  num_captions = num_videos * per_video
  caption_video = np.repeat(np.arange(num_videos), per_video)
  out = retrieval.multi_caption_retrieval_metrics(
    np.ones((num_captions, num_videos)), caption_video, prefix=""
  )
  t2v_rank = num_videos
  v2t_rank = 1 + (num_videos - 1) * per_video
  assert out == _expected(
    [t2v_rank] * num_captions, [v2t_rank] * num_videos, num_videos, num_captions, prefix=""
  )
  # (4, 3): v2t rank 10 -> R@10 = 1 but R@5 = 0; (5, 3): rank 13 -> R@10 = 0.
  assert out["v2t_R@1"] == 0.0
  assert out["v2t_MdR"] == out["v2t_MnR"] == float(v2t_rank)


def test_same_video_ties_are_not_competitors():
  # Both captions of v0 score 1.0 against v0; they must not push each other
  # down, while an equal-scoring caption of v1 does.
  sim = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  out = retrieval.multi_caption_retrieval_metrics(sim, [0, 0, 1], prefix="")
  assert out["v2t_R@1"] == 1.0
  sim[2, 0] = 1.0  # caption of v1 ties with v0's best -> v0 rank 2
  out = retrieval.multi_caption_retrieval_metrics(sim, [0, 0, 1], prefix="")
  assert out["v2t_R@1"] == 0.5 and out["v2t_MnR"] == 1.5


@pytest.mark.parametrize("seed", range(6))
def test_matches_literal_definition_with_ties(seed):
  rng = np.random.default_rng(seed)
  num_videos = int(rng.integers(1, 9))
  per_video = rng.integers(1, 5, size=num_videos)
  caption_video = rng.permutation(np.repeat(np.arange(num_videos), per_video))
  # Few distinct values so ties are common.
  sim = rng.integers(0, 4, size=(caption_video.size, num_videos)) / 4
  out = retrieval.multi_caption_retrieval_metrics(sim, caption_video)
  t2v, v2t = _reference(sim, caption_video)
  assert out == _expected(t2v, v2t, num_videos, caption_video.size)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_one_caption_per_video_equals_retrieval_metrics(seed, ties):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 40))
  sim = rng.normal(size=(n, n)).astype(np.float32)
  if ties:
    sim = np.round(sim * 2) / 2  # many exact ties, including on the diagonal
  if seed == 0:
    sim = np.ones((n, n), dtype=np.float32)  # everything ties
  old = retrieval.retrieval_metrics(sim, prefix="p/")
  new = retrieval.multi_caption_retrieval_metrics(sim, np.arange(n), "p/")
  for direction in ("t2v", "v2t"):
    for metric in ("R@1", "R@5", "R@10", "MdR"):
      key = f"p/{direction}_{metric}"
      assert new[key] == old[key], key  # exactly, not approximately
  assert new["p/num_videos"] == new["p/num_captions"] == old["p/num_clips"]


def test_caption_order_does_not_matter():
  perm = np.array([3, 0, 4, 2, 1])
  a = retrieval.multi_caption_retrieval_metrics(_SIM, _CAPTION_VIDEO)
  b = retrieval.multi_caption_retrieval_metrics(_SIM[perm], _CAPTION_VIDEO[perm])
  assert a == b


@pytest.mark.parametrize(
  "sim,caption_video,match",
  [
    (np.zeros(3), [0, 1, 2], "similarity must be"),
    (np.zeros((0, 3)), [], "similarity must be"),
    (np.zeros((3, 0)), [0, 1, 2], "similarity must be"),
    (np.zeros((3, 2)), [0, 1], "caption_video must have shape"),
    (np.zeros((2, 2)), [[0, 1]], "caption_video must have shape"),
    (np.zeros((2, 2)), [0.0, 1.0], "integer"),
    (np.zeros((2, 2)), [True, False], "integer"),
    (np.zeros((2, 2)), [0, 2], r"\[0, 2\)"),
    (np.zeros((2, 2)), [-1, 1], r"\[0, 2\)"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), [0, 1], "NaN or inf"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), [0, 1], "NaN or inf"),
    (np.zeros((3, 3)), [0, 0, 2], "1 of 3 videos have no caption"),
    (np.zeros((2, 4)), [3, 3], "3 of 4 videos have no caption"),
  ],
)
def test_rejects_bad_input(sim, caption_video, match):
  with pytest.raises(ValueError, match=match):
    retrieval.multi_caption_retrieval_metrics(sim, caption_video)
