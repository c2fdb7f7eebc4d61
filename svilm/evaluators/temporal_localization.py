"""Temporal action localization metrics: ActivityNet v1.3's detection mAP, exactly.

Definitions (those of ActivityNet's official Evaluation/eval_detection.py; the functions below
implement them):
  tIoU           of segments [s0, e0] and [s1, e1]: max(0, min(e0, e1) - max(s0, s1)) divided by
                 (e0 - s0) + (e1 - s1) minus that intersection.
  matching       per class and per tIoU threshold t, independently: the class's predictions in
                 order of score, highest first (equal scores keep their order in the
                 prediction file); each is a true positive when, among the ground-truth segments
                 of the same video and class not yet matched at t, one has tIoU >= t with it (the
                 highest-tIoU such segment is then matched), else a false positive. So a
                 duplicate of a matched prediction is a false positive, a prediction that
                 overlaps two ground truths takes the one of higher tIoU, and a prediction on a
                 video without ground truth of its class is a false positive.
  AP             precision and recall after each prediction (recall = true positives / the
                 class's ground-truth segments), precision made monotone from the right
                 (interpolated), then the sum over the recall steps of the step times the
                 interpolated precision there (VOC-style area, no 11-point sampling).
  mAP@t          the mean AP over the classes of the ground truth (a class without predictions
                 has AP 0); average_mAP is the mean of mAP@t over t in 0.50:0.05:0.95.
Predictions whose label is not a ground-truth class are left out of every AP (they cannot be
right or wrong for a class that is not evaluated) and counted in num_unknown_label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json

import numpy as np

# The official thresholds, bit for bit: np.linspace's 0.9 is 0.8999999999999999, which decides
# a tIoU that lies between the two doubles (metric names print it as 0.9).
TIOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())


def segment_tiou(segment: Sequence[float], candidates: np.ndarray) -> np.ndarray:
  """tIoU of one [start, end] segment with each row of `candidates` [N, 2]."""
  candidates = np.asarray(candidates, np.float64).reshape(-1, 2)
  start = np.maximum(segment[0], candidates[:, 0])
  end = np.minimum(segment[1], candidates[:, 1])
  intersection = np.clip(end - start, 0.0, None)
  union = (segment[1] - segment[0]) + (candidates[:, 1] - candidates[:, 0]) - intersection
  return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
  """The area under the interpolated precision-recall curve (module docstring)."""
  precision = np.concatenate([[0.0], precision, [0.0]])
  recall = np.concatenate([[0.0], recall, [1.0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
  return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def average_precision(
  ground_truth: Mapping[str, np.ndarray],
  predictions: Sequence[tuple[str, float, float, float]],
  thresholds: Sequence[float] = TIOU_THRESHOLDS,
) -> np.ndarray:
  """AP [len(thresholds)] of one class.

  ground_truth: {video: [G, 2] segments of this class}; predictions: (video, start, end,
  score) of this class, in file order.
  """
  num_positives = sum(len(s) for s in ground_truth.values())
  ap = np.zeros(len(thresholds))
  if num_positives == 0 or not predictions:
    return ap
  order = np.argsort(-np.array([p[3] for p in predictions]), kind="stable")
  true_positive = np.zeros((len(thresholds), len(order)))
  matched = {video: np.zeros((len(thresholds), len(s)), bool) for video, s in ground_truth.items()}
  for rank, index in enumerate(order):
    video, start, end, _ = predictions[index]
    if video not in ground_truth or len(ground_truth[video]) == 0:
      continue  # a false positive at every threshold
    tiou = segment_tiou((start, end), ground_truth[video])
    by_tiou = np.argsort(-tiou, kind="stable")
    for t, threshold in enumerate(thresholds):
      for g in by_tiou:
        if tiou[g] < threshold:
          break
        if matched[video][t, g]:
          continue
        matched[video][t, g] = True
        true_positive[t, rank] = 1.0
        break
  tp = np.cumsum(true_positive, axis=1)
  fp = np.cumsum(1.0 - true_positive, axis=1)
  recall = tp / num_positives
  precision = tp / (tp + fp)
  for t in range(len(thresholds)):
    ap[t] = interpolated_ap(precision[t], recall[t])
  return ap


def detection_metrics(
  ground_truth: Mapping, predictions: Mapping, *, subset: str = "validation", prefix: str = "tal/"
) -> dict[str, float]:
  """Metrics from ActivityNet v1.3 JSON objects: ground truth {"database": {video: {"subset",
  "annotations": [{"segment": [t0, t1], "label"}]}}} (only `subset`'s videos) and predictions
  {"results": {video: [{"label", "score", "segment": [t0, t1]}]}}.

  Returns {prefix}mAP@<t> for each t of 0.50:0.05:0.95, {prefix}average_mAP, and
  {prefix}num_classes, num_videos, num_ground_truth, num_predictions, num_unknown_label.
  """
  if "database" not in ground_truth:
    raise ValueError('The ground truth has no "database": not an ActivityNet v1.3 file')
  if "results" not in predictions:
    raise ValueError('The predictions have no "results": not an ActivityNet results file')
  by_class: dict[str, dict[str, list]] = {}
  videos = set()
  for video, entry in ground_truth["database"].items():
    if entry.get("subset") != subset:
      continue
    videos.add(video)
    for annotation in entry.get("annotations", []):
      by_class.setdefault(annotation["label"], {}).setdefault(video, []).append(
        [float(t) for t in annotation["segment"]]
      )
  if not by_class:
    raise ValueError(f"The ground truth has no annotated video in subset {subset!r}")
  predicted: dict[str, list] = {label: [] for label in by_class}
  count = unknown = 0
  for video, entries in predictions["results"].items():
    for p in entries:
      count += 1
      if p["label"] not in predicted:
        unknown += 1
        continue
      start, end = (float(t) for t in p["segment"])
      predicted[p["label"]].append((video, start, end, float(p["score"])))
  ap = np.stack(
    [
      average_precision({v: np.array(s) for v, s in by_class[label].items()}, predicted[label])
      for label in sorted(by_class)
    ]
  )  # [C, T]
  mean_ap = ap.mean(axis=0)
  out = {f"{prefix}mAP@{t:g}": float(m) for t, m in zip(TIOU_THRESHOLDS, mean_ap)}
  out[f"{prefix}average_mAP"] = float(mean_ap.mean())
  out[f"{prefix}num_classes"] = float(len(by_class))
  out[f"{prefix}num_videos"] = float(len(videos))
  out[f"{prefix}num_ground_truth"] = float(
    sum(len(s) for per_video in by_class.values() for s in per_video.values())
  )
  out[f"{prefix}num_predictions"] = float(count)
  out[f"{prefix}num_unknown_label"] = float(unknown)
  return out


def evaluate_files(ground_truth_path: str, predictions_path: str, subset: str) -> dict[str, float]:
  """`detection_metrics` of an ActivityNet ground-truth file and a results file."""
  with open(ground_truth_path) as f:
    ground_truth = json.load(f)
  with open(predictions_path) as f:
    predictions = json.load(f)
  return detection_metrics(ground_truth, predictions, subset=subset)
