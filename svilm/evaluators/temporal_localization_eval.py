"""Temporal action localization evaluation: the head over a split's features, Soft-NMS, and
ActivityNet detection mAP.

For every video of the split (its features at num_steps steps, svilm/tasks/
temporal_localization.py) the head scores every pyramid point and class. Post-processing, as
ActionFormer's: the (point, class) pairs scoring above pre_nms_threshold, at most pre_nms_topk
of them, are decoded into segments (seconds) and passed through Soft-NMS per class
(svilm/evaluators/segment_nms.py); the best max_predictions remain. They are written, in the
ActivityNet results format {"version", "results": {video: [{"label", "score", "segment"}]},
"external_data"}, to WORKDIR/temporal_localization_predictions.json, and scored against the
ground truth (temporal_localization.ground_truth, else the feature directory's
ground_truth.json, subset = the split's ActivityNet name) by
`temporal_localization.detection_metrics`:

  tal/mAP@0.5 ... tal/mAP@0.95, tal/average_mAP   ActivityNet's detection mAP
  tal/num_*                                       classes, videos, segments, predictions
  tal_blank/average_mAP, tal_blank/mAP@0.5        the control: the same head and post-processing
                                                  on all-zero features, i.e. what it predicts
                                                  without reading the video (its priors over
                                                  positions, lengths and classes)
"""

from __future__ import annotations

import functools
import json

import jax
import numpy as np

from svilm import sharding
from svilm.evaluators import segment_nms
from svilm.evaluators import temporal_localization
from svilm.models import localization_head

PREDICTIONS_FILE = "temporal_localization_predictions.json"


def _apply(params, features, *, model):
  return model.apply({"params": params}, features, train=False)


def postprocess(logits, offsets, points, *, duration: float, classes, tal) -> list[dict]:
  """One video's predictions, ActivityNet entries best first: logits [P, K], offsets [P, 2]."""
  num_classes = logits.shape[1]
  scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).ravel()
  candidates = np.flatnonzero(scores > tal.pre_nms_threshold)
  if candidates.size > tal.pre_nms_topk:
    order = np.argsort(-scores[candidates], kind="stable")[: tal.pre_nms_topk]
    candidates = candidates[order]
  point, label = candidates // num_classes, candidates % num_classes
  steps = localization_head.decode(offsets.astype(np.float64), points, tal.num_steps)
  segments = steps[point] * (duration / tal.num_steps)
  keep = segments[:, 1] > segments[:, 0]
  segments, score, label = segments[keep], scores[candidates][keep], label[keep]
  segments, score, label = segment_nms.soft_nms(
    segments,
    score,
    label,
    method=tal.nms_method,
    sigma=tal.nms_sigma,
    iou_threshold=tal.nms_iou_threshold,
    min_score=tal.nms_min_score,
    max_segments=tal.max_predictions,
  )
  return [
    {"label": classes[c], "score": float(s), "segment": [float(t0), float(t1)]}
    for (t0, t1), s, c in zip(segments, score, label)
  ]


class LocalizationEvaluator:
  """`run(params)` -> {"tal/...": value} over the videos of one split; `outputs()` -> the
  predictions file of the last run."""

  def __init__(self, config, model, mesh, params_shardings, *, feature_dir: str, split: str):
    from svilm import feature_store
    from svilm.tasks import temporal_localization as task_lib

    self._config, self._mesh = config, mesh
    self._tal = config.temporal_localization
    self._videos = task_lib.load_videos(config, feature_dir, split)
    self._points = task_lib.points(config)
    self._subset = feature_store.subset_of(split)
    path = self._tal.ground_truth or f"{feature_dir}/{feature_store.GROUND_TRUTH}"
    with open(path) as f:
      self._ground_truth = json.load(f)
    self._predict = sharding.jit_evaluation(
      functools.partial(_apply, model=model), config, mesh, params_shardings, [True]
    )
    self._outputs: dict = {}

  def _head_outputs(self, params, features: np.ndarray):
    """(logits [N, P, K], offsets [N, P, 2]) of every video, in eval.batch_size batches split
    between hosts (every host holds all features and passes its rows of each batch)."""
    size = self._config.eval.batch_size
    local = size // jax.process_count()
    begin = jax.process_index() * local
    logits, offsets = [], []
    for start in range(0, len(features), size):
      rows = features[start : start + size]
      padded = np.concatenate([rows, np.zeros((size - len(rows), *rows.shape[1:]), rows.dtype)])
      batch = sharding.to_global({"f": padded[begin : begin + local]}, self._mesh)["f"]
      out_logits, out_offsets = self._predict(params, batch)
      logits.append(np.asarray(out_logits)[: len(rows)])
      offsets.append(np.asarray(out_offsets)[: len(rows)])
    return np.concatenate(logits), np.concatenate(offsets)

  def predictions(self, params, features: np.ndarray) -> dict:
    """{"results": ...} of the head on `features` [N, L, D] (the split's videos in order)."""
    logits, offsets = self._head_outputs(params, features)
    results = {
      video["video_id"]: postprocess(
        logits[i],
        offsets[i],
        self._points,
        duration=video["duration"],
        classes=video["classes"],
        tal=self._tal,
      )
      for i, video in enumerate(self._videos)
    }
    return {
      "version": "VERSION 1.3",
      "results": results,
      "external_data": {"used": False, "details": "S-ViLM features (svilm.extract_features)"},
    }

  def run(self, params) -> dict[str, float]:
    features = np.stack([v["steps"] for v in self._videos])
    predictions = self.predictions(params, features)
    self._outputs = {PREDICTIONS_FILE: predictions}
    out = temporal_localization.detection_metrics(
      self._ground_truth, predictions, subset=self._subset, prefix="tal/"
    )
    blank = temporal_localization.detection_metrics(
      self._ground_truth,
      self.predictions(params, np.zeros_like(features)),
      subset=self._subset,
      prefix="tal_blank/",
    )
    out.update({k: blank[k] for k in ("tal_blank/average_mAP", "tal_blank/mAP@0.5")})
    return out

  def outputs(self) -> dict:
    return self._outputs
