"""Classification metrics (action recognition): top-k, mean class accuracy, multi-view testing.

Definitions (exact; the functions below implement them):
  logits [N, C] scores of N samples over C classes, labels [N] in [0, C).
  rank of sample n = 1 + #{c != y_n : logits[n, c] >= logits[n, y_n]}
  top-k accuracy   = fraction of samples with rank <= k (in [0, 1], not percent).
  mean class accuracy = the mean over the classes that have at least one sample of the top-1
                   accuracy among that class's samples. A class with no sample in the
                   evaluated set is left out: it has no accuracy, and counting it as 0 or 1
                   would move the mean by a class that was never tested.
  multi-view testing: a video is scored on V views (temporal clips x spatial crops); its logits
                   are the mean of its views' logits, and the metrics above are taken over
                   videos, not views.

Tie rule: a class scoring exactly the same as the true class counts as ranked ahead of it, the
pessimistic choice that retrieval makes too (svilm/evaluators/retrieval.py): a model whose
logits are all equal gets top-1 accuracy 0 (C > 1), not 1.
"""

from __future__ import annotations

import numpy as np


def ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Rank of each sample's true class (1 = first), ties counted against it."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"logits {logits.shape} and labels {labels.shape}: want [N, C] and [N]")
  if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
    raise ValueError(
      f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}"
    )
  if np.isnan(logits).any():
    raise ValueError("logits hold NaN: no rank is defined")
  true = logits[np.arange(len(labels)), labels][:, None]
  return (logits >= true).sum(axis=1)  # the true class itself counts once: rank 1 when alone


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  return float(np.mean(ranks(logits, labels) <= k))


def mean_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean over the classes present in `labels` of their samples' top-1 accuracy."""
  labels = np.asarray(labels)
  hit = ranks(logits, labels) == 1
  present = np.unique(labels)
  return float(np.mean([hit[labels == c].mean() for c in present]))


def average_views(logits: np.ndarray, video_index: np.ndarray, num_videos: int) -> np.ndarray:
  """[num_videos, C]: the mean of the logits of each video's views (`video_index[i]` is the
  video of view i). Every video must have at least one view."""
  logits, video_index = np.asarray(logits, np.float64), np.asarray(video_index)
  counts = np.bincount(video_index, minlength=num_videos)
  if len(counts) != num_videos or np.any(counts == 0):
    raise ValueError(f"every one of the {num_videos} videos needs a view; counts {counts}")
  sums = np.zeros((num_videos, logits.shape[1]))
  np.add.at(sums, video_index, logits)
  return sums / counts[:, None]


def classification_metrics(
  logits: np.ndarray, labels: np.ndarray, prefix: str, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
  """{prefix + 'top{k}'} for each k, prefix + 'mean_class_accuracy', prefix + 'num_videos'."""
  out = {f"{prefix}top{k}": topk_accuracy(logits, labels, k) for k in ks}
  out[f"{prefix}mean_class_accuracy"] = mean_class_accuracy(logits, labels)
  out[f"{prefix}num_videos"] = float(len(labels))
  return out


def chance_level(key: str, results: dict[str, float]) -> float | None:
  """What a classifier that ignores its input scores on metric `key` of `results`, or None.

  With C = `<group>/num_classes`, a uniformly random ranking of the classes gives top-k (and
  single_view_topk) min(k / C, 1) and mean class accuracy 1 / C, in expectation.
  """
  group, _, name = key.rpartition("/")
  classes = results.get(f"{group}/num_classes")
  if classes is None:
    return None
  name = name.removeprefix("single_view_")
  if name.startswith("top") and name[3:].isdigit():
    return min(int(name[3:]) / classes, 1.0)
  if name == "mean_class_accuracy":
    return 1.0 / classes
  return None
