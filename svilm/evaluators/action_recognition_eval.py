"""Action recognition evaluation with multi-view testing (svilm/evaluators/classification.py).

Each video of the split is read once as V = eval.num_clips x eval.num_crops views (ops.Views:
clip starts spread evenly over the video, crops at the centre and both ends of the longer
side), the classifier scores every view in inference mode, and a video's logits are the mean
of its views' logits. Reported, with `prefix` (e.g. "action_recognition/"):

  top1, top5, mean_class_accuracy   over videos, on the view-averaged logits
  single_view_top1                  top-1 of the single centre view (the middle clip's centre
                                    crop), so the gain from multi-view testing is visible
  num_videos, num_classes, num_views

Every host reads the whole split and keeps its rows of each global batch (as the pretraining
evaluator does), so the numbers do not depend on the number of hosts or devices.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from data_pipelines import input_pipeline
from data_pipelines import ops
from svilm import sharding
from svilm.evaluators import classification


def _view_logits(params, video, *, model):
  """video [B, V, T, H, W, 3] -> logits [B, V, C]: every view through the classifier."""
  batch, views = video.shape[:2]
  logits = model.apply({"params": params}, video.reshape(-1, *video.shape[2:]), train=False)
  return logits.reshape(batch, views, -1)


def views_op(config: ml_collections.ConfigDict) -> ops.Views:
  """The multi-view op of config.eval and config.data."""
  return ops.Views(
    num_frames=config.data.num_frames,
    num_clips=config.eval.num_clips,
    num_crops=config.eval.num_crops,
    resolution=config.data.resolution,
    crop_fraction=config.eval.crop_fraction,
    stride=config.data.frame_stride,
  )


class ActionRecognitionEvaluator:
  """`run(params)` -> {prefix + metric: value} over the videos of `eval_files`."""

  def __init__(self, config, model, mesh, params_shardings, eval_files, *, prefix: str):
    self._config, self._mesh, self._prefix = config, mesh, prefix
    self._files = list(eval_files)
    self._views = views_op(config)
    self._predict = sharding.jit_evaluation(
      functools.partial(_view_logits, model=model), config, mesh, params_shardings, [True]
    )

  def _dataset(self):
    config = self._config
    return input_pipeline.make_dataset_from_ops(
      self._files,
      example_ops=[self._views, ops.Normalize(config.data.normalization), ops.Label()],
      batch_size=config.eval.batch_size // jax.process_count(),
      train=False,
      max_examples=config.eval.max_clips,
      host_slice=(jax.process_index(), jax.process_count()),
    )

  def logits(self, params) -> tuple[np.ndarray, np.ndarray]:
    """(view logits [N, V, C], labels [N]) of every video of the split."""
    parts, labels, valid = [], [], []
    for local in input_pipeline.as_numpy(self._dataset()):
      video = sharding.to_global({"video": local["video"]}, self._mesh)["video"]
      parts.append(np.asarray(self._predict(params, video)))
      gathered = multihost_utils.process_allgather(
        {"label": local["label"], "valid": local["valid"]}, tiled=True
      )
      labels.append(np.asarray(gathered["label"]))
      valid.append(np.asarray(gathered["valid"]))
    if not parts:
      raise ValueError(f"The evaluation split ({len(self._files)} files) holds no videos")
    real = np.concatenate(valid) == 1
    logits, labels = np.concatenate(parts)[real], np.concatenate(labels)[real]
    if np.any(labels < 0):
      raise ValueError(
        f"{int(np.sum(labels < 0))} evaluation videos have no action label (action_labels is "
        "empty): build the split with a classification reader"
      )
    return logits, labels

  def run(self, params) -> dict[str, float]:
    logits, labels = self.logits(params)
    num_videos, num_views, num_classes = logits.shape
    if labels.max() >= num_classes:
      raise ValueError(
        f"label {labels.max()} of the evaluation split is outside the model's "
        f"{num_classes} classes (action_recognition.num_classes)"
      )
    averaged = classification.average_views(
      logits.reshape(-1, num_classes), np.repeat(np.arange(num_videos), num_views), num_videos
    )
    prefix = self._prefix
    out = classification.classification_metrics(averaged, labels, prefix)
    single = logits[:, self._views.center_view]
    out[f"{prefix}single_view_top1"] = classification.topk_accuracy(single, labels, 1)
    out[f"{prefix}num_classes"] = float(num_classes)
    out[f"{prefix}num_views"] = float(num_views)
    return out
