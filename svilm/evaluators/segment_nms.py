"""Soft-NMS for 1-D temporal segments: the post-processing of a temporal action localization
head (ActionFormer-style) before ActivityNet detection scoring (`temporal_localization.py`).

Greedy Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code",
ICCV 2017) on [t0, t1] segments, numpy only. The overlap is `temporal_localization.segment_tiou`,
the exact tIoU the ActivityNet evaluator matches with. ActionFormer's C++ kernel adds 1e-6 to each
length (so its tIoU is a hair smaller and its decayed scores differ in the last digits), breaks
equal scores in no fixed order, and does not drop an initial score below min_score (its head
filters those before the NMS); here equal scores go by input index and every score below
min_score is dropped.
"""

from __future__ import annotations

import numpy as np

from svilm.evaluators.temporal_localization import segment_tiou

METHODS = ("gaussian", "linear", "hard")


def _tiou(segment: np.ndarray, candidates: np.ndarray) -> np.ndarray:
  """`segment_tiou`, except that two identical zero-length segments (the same point) have tIoU 1.

  segment_tiou gives 0 whenever the union is 0 (never NaN); a point is a duplicate of itself, so
  NMS should treat it as one. Two different points, or a point and a segment, stay at tIoU 0 (their
  intersection is empty or has length 0).
  """
  tiou = segment_tiou(segment, candidates)
  if segment[0] == segment[1]:
    same_point = (candidates[:, 0] == segment[0]) & (candidates[:, 1] == segment[1])
    tiou = np.where(same_point, 1.0, tiou)
  return tiou


def _soft_nms_one_class(
  segments: np.ndarray,
  scores: np.ndarray,
  method: str,
  sigma: float,
  iou_threshold: float,
  min_score: float,
  max_picks: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Greedy Soft-NMS of one class: (kept row indices into `segments`, their decayed scores), in
  pick order. `max_picks` <= 0: no limit.

  The remaining rows are kept in index order, so np.argmax (the first maximum) picks the earliest
  index among equal scores.
  """
  remaining = np.flatnonzero(scores >= min_score)
  current = scores[remaining].copy()
  picked, picked_scores = [], []
  while remaining.size and (max_picks <= 0 or len(picked) < max_picks):
    best = int(np.argmax(current))
    index = remaining[best]
    picked.append(index)
    picked_scores.append(current[best])
    keep = np.ones(remaining.size, bool)
    keep[best] = False
    remaining, current = remaining[keep], current[keep]
    if not remaining.size:
      break
    overlap = _tiou(segments[index], segments[remaining])
    if method == "gaussian":
      current = current * np.exp(-np.square(overlap) / sigma)
      alive = current >= min_score
    elif method == "linear":
      current = np.where(overlap >= iou_threshold, current * (1.0 - overlap), current)
      alive = current >= min_score
    else:  # hard: classic NMS removes a suppressed segment whatever min_score is.
      alive = overlap < iou_threshold
    remaining, current = remaining[alive], current[alive]
  return np.asarray(picked, np.int64), np.asarray(picked_scores, np.float64)


def soft_nms(
  segments,
  scores,
  labels,
  *,
  method: str = "gaussian",
  sigma: float = 0.5,
  iou_threshold: float = 0.5,
  min_score: float = 1e-3,
  max_segments: int = 100,
  class_agnostic: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Greedy Soft-NMS of one video's scored, labelled temporal segments.

  Args:
    segments: [N, 2] floats, [t0, t1] with t0 <= t1 (any time unit).
    scores: [N] floats >= 0, the detection confidences.
    labels: [N] integer class ids.
    method: how a remaining segment's score s decays when a segment of its class is picked, o
      being their tIoU:
        "gaussian": s *= exp(-o**2 / sigma)      (every overlap decays; o = 0 leaves s as is)
        "linear":   s *= (1 - o) if o >= iou_threshold, else s unchanged
        "hard":     the segment is removed if o >= iou_threshold (classic NMS)
    sigma: the Gaussian's width (> 0; used by "gaussian" only). exp(-o**2 / sigma) is Bodla et
      al.'s and ActionFormer's form (no factor 2): with sigma 0.5, o = 0.5 keeps exp(-0.5) ~ 0.61
      of the score and o = 1 keeps exp(-2) ~ 0.14.
    iou_threshold: the tIoU from which "linear" decays and "hard" removes (in (0, 1]; unused by
      "gaussian").
    min_score: a segment whose (decayed or initial) score is below it is dropped (s < min_score;
      s == min_score is kept).
    max_segments: at most this many segments are returned, the highest scores; <= 0: no cap.
    class_agnostic: if True all segments compete whatever their labels; if False (default) the
      NMS runs per class and a segment is never decayed by one of another class.

  Algorithm: per class (or over all segments), repeatedly pick the remaining segment of highest
  current score (equal scores: the earlier input index first), keep it with that score, decay
  every other remaining segment by its tIoU with the picked one, and drop those below min_score.
  The classes' kept segments are then merged and sorted by decayed score, highest first, equal
  scores by input index (within a class this is the pick order), and the first max_segments
  returned. tIoU is `temporal_localization.segment_tiou`'s exact tIoU, with one addition: two
  identical zero-length segments have tIoU 1 (segment_tiou's union is 0 there and it gives 0); any
  other pair whose union is 0 has tIoU 0.

  Returns:
    (segments [M, 2] float64, scores [M] float64 (decayed), labels [M] of labels' integer dtype),
    M <= max_segments, in the order above. N = 0 gives empty arrays of those shapes.

  Raises:
    ValueError: an unknown method, sigma <= 0, iou_threshold outside (0, 1], shapes that do not
      match, non-finite values, t0 > t1, negative scores, or non-integer labels.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown Soft-NMS method {method!r}: expected one of {METHODS}")
  if not sigma > 0:
    raise ValueError(f"sigma must be > 0 (the Gaussian decay is exp(-o**2 / sigma)), got {sigma}")
  if not 0 < iou_threshold <= 1:
    raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
  if np.isnan(min_score):
    raise ValueError("min_score is NaN")

  segments = np.asarray(segments, np.float64)
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  if segments.size == 0 and segments.ndim == 1:
    segments = segments.reshape(0, 2)
  if labels.size == 0 and not np.issubdtype(labels.dtype, np.integer):
    labels = labels.astype(np.int64)  # an empty list arrives as float64
  if segments.ndim != 2 or segments.shape[1] != 2:
    raise ValueError(f"segments must be [N, 2] ([t0, t1] rows), got shape {segments.shape}")
  n = segments.shape[0]
  if scores.shape != (n,):
    raise ValueError(f"scores must be [N] = [{n}] like segments, got shape {scores.shape}")
  if labels.shape != (n,):
    raise ValueError(f"labels must be [N] = [{n}] like segments, got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
  if not (np.all(np.isfinite(segments)) and np.all(np.isfinite(scores))):
    raise ValueError("segments and scores must be finite (no NaN or inf)")
  if np.any(segments[:, 0] > segments[:, 1]):
    bad = int(np.flatnonzero(segments[:, 0] > segments[:, 1])[0])
    raise ValueError(f"segment {bad} ends before it starts: {segments[bad].tolist()}")
  if np.any(scores < 0):
    raise ValueError("scores must be >= 0 (Soft-NMS decays scores multiplicatively)")

  groups = (
    [np.arange(n)] if class_agnostic else [np.flatnonzero(labels == c) for c in np.unique(labels)]
  )
  kept, kept_scores = [], []
  for rows in groups:
    # Within a class, picked scores never increase, so a class contributes at most max_segments
    # picks to the merged top max_segments: stopping there is exact.
    picked, picked_scores = _soft_nms_one_class(
      segments[rows], scores[rows], method, sigma, iou_threshold, min_score, max_segments
    )
    kept.append(rows[picked])
    kept_scores.append(picked_scores)
  kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
  kept_scores = np.concatenate(kept_scores) if kept_scores else np.zeros(0, np.float64)
  order = np.lexsort((kept, -kept_scores))  # score descending, then input index
  if max_segments > 0:
    order = order[:max_segments]
  kept, kept_scores = kept[order], kept_scores[order]
  return segments[kept].reshape(-1, 2), kept_scores, labels[kept]
