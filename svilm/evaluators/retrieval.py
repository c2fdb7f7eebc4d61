"""Text-video retrieval metrics: R@1/5/10, median and mean rank, both ways.

Definitions (exact; `retrieval_metrics` implements them):
  Clips and captions are matched pairs: caption i describes clip i, and
  similarity[i, j] is the score of caption i against clip j.
  t2v rank of caption i = 1 + #{j != i : similarity[i, j] >= similarity[i, i]}
  v2t rank of clip j    = 1 + #{i != j : similarity[i, j] >= similarity[j, j]}
  R@k = fraction (in [0, 1], not percent) of queries with rank <= k.
  MdR = median of the ranks (numpy median: the mean of the two middle ranks
        when the number of queries is even, so it can end in .5).
  MnR = mean rank: the arithmetic mean of the ranks (reported only by
        `multi_caption_retrieval_metrics`).

Several captions per video (exact; `multi_caption_retrieval_metrics`):
  similarity[c, v] is the score of caption c against video v, and caption c
  describes video g(c) = caption_video[c]. Every video has >= 1 caption.
  t2v: one query per caption c,
    rank(c) = 1 + #{v != g(c) : similarity[c, v] >= similarity[c, g(c)]}
  v2t: one query per video v. Within v's list of all captions, a caption c
    of v has rank
      r_v(c) = 1 + #{c' : g(c') != v, similarity[c', v] >= similarity[c, v]}
    (the other captions of v are correct answers, not competitors), and
      rank(v) = min over {c : g(c) = v} of r_v(c)
              = 1 + #{c' : g(c') != v, similarity[c', v] >= best(v)},
    best(v) = max over {c : g(c) = v} of similarity[c, v]. Competitors are
    counted per caption, not per video.
  R@k, MdR and MnR are taken over the N_captions t2v ranks and over the
  N_videos v2t ranks. With one caption per video and g(c) = c this is
  exactly the matched-pair definition above.

Tie rule: a candidate scoring exactly the same as the true item is counted as
ranked ahead of it. This is the pessimistic choice, so a degenerate model (for
example one whose embeddings collapse to a constant, where every score ties)
gets rank N instead of rank 1; any optimistic or index-based rule would let
such a model report perfect recall.

Duplicate captions: when two clips share a caption, the "other" clip is an
equally correct answer but is counted as a miss. Retrieval is therefore run
on a subset whose captions are pairwise distinct (`distinct_caption_indices`).
In the several-captions setting only captions of the same video are exempt;
an identical caption attached to another video still counts as a competitor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranks(similarity: np.ndarray) -> np.ndarray:
  """Rank of the diagonal entry of each row, ties counted against it."""
  true = np.diagonal(similarity)[:, None]
  at_least = similarity >= true  # includes the diagonal itself exactly once
  return at_least.sum(axis=1)  # = 1 + others with score >= true


def retrieval_metrics(similarity: np.ndarray, prefix: str = "retrieval/") -> dict[str, float]:
  """Recall at 1/5/10 and median rank for text-to-video and video-to-text.

  Args:
    similarity: [N_text, N_video] scores with N_text == N_video; caption i
      belongs to clip i. Must be finite: NaN compares false and would flatter.
    prefix: prepended to every key.

  Returns:
    {prefix + key: float} for keys 't2v_R@1', 't2v_R@5', 't2v_R@10',
    't2v_MdR', 'v2t_R@1', 'v2t_R@5', 'v2t_R@10', 'v2t_MdR' (see the module
    docstring for the definitions) and 'num_clips' = N.
  """
  # float64 so near-equal float32 scores are compared exactly as given.
  sim = np.asarray(similarity, dtype=np.float64)
  if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
    raise ValueError(
      f"similarity must be a non-empty square [N, N] matrix of matched "
      f"caption-clip pairs, got shape {sim.shape}."
    )
  if not np.all(np.isfinite(sim)):
    raise ValueError("similarity contains NaN or inf.")
  out = {}
  # Rows of sim are captions (t2v queries); rows of sim.T are clips (v2t).
  for direction, matrix in (("t2v", sim), ("v2t", sim.T)):
    ranks = _ranks(matrix)
    for k in (1, 5, 10):
      out[f"{prefix}{direction}_R@{k}"] = float(np.mean(ranks <= k))
    out[f"{prefix}{direction}_MdR"] = float(np.median(ranks))
  out[f"{prefix}num_clips"] = float(sim.shape[0])
  return out


def distinct_caption_indices(captions: Sequence[str | bytes]) -> np.ndarray:
  """Indices of the first occurrence of each distinct caption, ascending.

  Captions compare exactly (case and whitespace matter); bytes are decoded as
  UTF-8 first so b'a dog' and 'a dog' count as the same caption.

  Args:
    captions: the caption of each clip, in clip order.

  Returns:
    int64 [N_distinct] indices into `captions`.
  """
  seen = set()
  keep = []
  for index, caption in enumerate(captions):
    if isinstance(caption, (bytes, np.bytes_)):
      caption = bytes(caption).decode("utf-8")
    # str() also lets integer caption ids through unchanged in meaning.
    caption = str(caption)
    if caption not in seen:
      seen.add(caption)
      keep.append(index)
  return np.asarray(keep, dtype=np.int64)


def multi_caption_retrieval_metrics(
  similarity: np.ndarray,
  caption_video: np.ndarray,
  prefix: str = "retrieval/",
) -> dict[str, float]:
  """Retrieval metrics when each video has one or more captions.

  Ranks (see the module docstring for the exact definitions; ties count
  against the true item, as in `retrieval_metrics`):
    t2v: one query per caption, ranked among all videos; its rank is 1 plus
      the number of other videos scoring >= its own video.
    v2t: one query per video, ranked among all captions; its rank is the best
      (smallest) rank among its ground-truth captions, where a caption's rank
      is 1 plus the number of captions of OTHER videos scoring >= it against
      this video. Captions of the same video are not competitors.

  Provenance of the v2t rule: it is the "rank of the closest ground-truth
  caption" protocol of VSE (Kiros et al., image-to-text on COCO/Flickr with 5
  captions per image: all captions ranked, the minimum rank over the image's
  own captions kept), which Collaborative Experts (albanie/collaborative-
  experts, model/metric.py `v2t_metrics`) adopts for multi-caption video
  benchmarks such as MSVD (about 40 captions per video). Neither counts ties
  against the true caption (VSE breaks them by argsort order, CE takes the
  first equal position in the sorted list); here ties are pessimistic, as in
  `retrieval_metrics`. CLIP4Clip's multi-sentence mode (ArrowLuo/CLIP4Clip,
  main_task_retrieval.py with `tensor_video_to_text_sim`, used for MSVD)
  differs for v2t: it max-pools each video's captions into one score per
  (video, video) pair and ranks videos, i.e. it counts competing VIDEOS, not
  competing captions, so its v2t ranks can only be smaller than (or equal
  to) the ones computed here. Its t2v ranks (each caption against all videos)
  match the t2v definition here up to ties.

  Args:
    similarity: [N_captions, N_videos] scores; similarity[c, v] is the score
      of caption c against video v. Must be finite.
    caption_video: int [N_captions]; caption_video[c] in [0, N_videos) is the
      video caption c describes. Every video needs at least one caption.
    prefix: prepended to every key.

  Returns:
    {prefix + key: float} for keys 't2v_R@1', 't2v_R@5', 't2v_R@10',
    't2v_MdR', 't2v_MnR', 'v2t_R@1', 'v2t_R@5', 'v2t_R@10', 'v2t_MdR',
    'v2t_MnR', 'num_videos' = N_videos and 'num_captions' = N_captions.
    With one caption per video and caption_video = arange(N), the R@k and
    MdR values equal those of `retrieval_metrics` exactly.

  Raises:
    ValueError: on a bad shape, non-finite scores, non-integer or out-of-range
      caption_video, or a video without any caption.
  """
  # float64 so near-equal float32 scores are compared exactly as given.
  sim = np.asarray(similarity, dtype=np.float64)
  if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
    raise ValueError(
      f"similarity must be a non-empty [N_captions, N_videos] matrix, got shape {sim.shape}."
    )
  num_captions, num_videos = sim.shape
  video = np.asarray(caption_video)
  if video.shape != (num_captions,):
    raise ValueError(
      f"caption_video must have shape [N_captions] = ({num_captions},) to "
      f"match similarity {sim.shape}, got shape {video.shape}."
    )
  if not np.issubdtype(video.dtype, np.integer):
    raise ValueError(f"caption_video must hold integer video indices, got dtype {video.dtype}.")
  video = video.astype(np.int64)
  if np.any(video < 0) or np.any(video >= num_videos):
    raise ValueError(
      f"caption_video values must lie in [0, {num_videos}), got min "
      f"{video.min()} and max {video.max()}."
    )
  if not np.all(np.isfinite(sim)):
    raise ValueError("similarity contains NaN or inf.")
  captions_per_video = np.bincount(video, minlength=num_videos)
  missing = np.flatnonzero(captions_per_video == 0)
  if missing.size:
    raise ValueError(
      f"{missing.size} of {num_videos} videos have no caption (first: "
      f"{missing[:5].tolist()}); every video needs at least one."
    )

  rows = np.arange(num_captions)
  true = sim[rows, video]  # score of each caption against its own video
  # t2v: includes the own video exactly once, so the count is already 1 + #.
  t2v_ranks = (sim >= true[:, None]).sum(axis=1)
  # v2t: the min over a video's captions of r_v(c) is reached at its best
  # caption, since r_v(c) only decreases as similarity[c, v] grows.
  best = np.full(num_videos, -np.inf)
  np.maximum.at(best, video, true)
  competitors = sim >= best[None, :]
  competitors[rows, video] = False  # same-video captions never compete
  v2t_ranks = 1 + competitors.sum(axis=0)

  out = {}
  for direction, ranks in (("t2v", t2v_ranks), ("v2t", v2t_ranks)):
    for k in (1, 5, 10):
      out[f"{prefix}{direction}_R@{k}"] = float(np.mean(ranks <= k))
    out[f"{prefix}{direction}_MdR"] = float(np.median(ranks))
    out[f"{prefix}{direction}_MnR"] = float(np.mean(ranks))
  out[f"{prefix}num_videos"] = float(num_videos)
  out[f"{prefix}num_captions"] = float(num_captions)
  return out


def chance_level(key: str, results: dict[str, float]) -> float | None:
  """What random scores would give for retrieval metric `key` of `results`, or None.

  A query's rank under random scores is uniform on 1..N, N the number of candidates, so
  R@k is min(k / N, 1) and MdR and MnR are (N + 1) / 2 (in expectation). N is
  `<prefix>num_clips` for matched pairs (both directions), `<prefix>num_videos` for t2v with
  several captions per video. None for keys that are not such metrics, and for v2t with
  several captions per video, whose chance depends on each video's caption count.
  """
  prefix, sep, name = key.rpartition("_")
  direction = prefix[-3:]
  if not sep or direction not in ("t2v", "v2t"):
    return None
  group = prefix[:-3]
  if group + "num_clips" in results:
    n = results[group + "num_clips"]
  elif direction == "t2v" and group + "num_videos" in results:
    n = results[group + "num_videos"]
  else:
    return None
  if name.startswith("R@") and name[2:].isdigit():
    return min(int(name[2:]) / n, 1.0)
  if name in ("MdR", "MnR"):
    return (n + 1) / 2
  return None
