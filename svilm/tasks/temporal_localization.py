"""Temporal action localization: an anchor-free head trained on frozen, extracted video features.

Features come from svilm/feature_extraction.py (the frozen S-ViLM video encoder slid over each
whole video): temporal_localization.features names a directory that
`python -m svilm.extract_features` wrote, or, when empty, they are extracted on first use
from features.init_from into a cache keyed by the extraction settings. Each video's window
features are resampled to `num_steps` steps over its duration (feature_store.resample), and
its ground-truth segments (the directory's ground_truth.json, ActivityNet format) are put in
those step units.

Model: svilm/models/localization_head.py (ActionFormer-style pyramid; why not G-TAD is
written there and in docs/tasks.md). Loss, per batch:
  classification  sigmoid focal loss (alpha, gamma) over every point and class, one-hot on
                  the assigned class of a positive point, summed / number of positives
  regression      DIoU loss of the positives' (start, end) distances, summed / positives,
                  times regression_weight
Evaluation (svilm/evaluators/temporal_localization_eval.py): Soft-NMS, ActivityNet results
JSON, and ActivityNet detection mAP (svilm/evaluators/temporal_localization.py).

Batch contract (this task's own; no video is read while training):
  features        float32 [B, L, D]   the video's features at L = num_steps steps
  segments        float32 [B, S, 2]   ground-truth (start, end) in steps, S = max_segments
  segment_labels  int32   [B, S]      class ids, -1 on padding
  index           int32   [B]         position in the training stream
"""

from __future__ import annotations

from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from data_pipelines.shapesworld import text as shapesworld_text
from svilm import configuration
from svilm import feature_extraction
from svilm import feature_store
from svilm import losses
from svilm.models import localization_head
from svilm.tasks import base
from svilm.tasks import video_text

require = configuration.require
BENCHMARKS = {"shapesworld": len(shapesworld_text.ACTIONS), "activitynet": 200}
NMS_METHODS = ("gaussian", "linear", "hard")


def default_config() -> ml_collections.ConfigDict:
  """config.temporal_localization: the task's own keys."""
  return ml_collections.ConfigDict(
    dict(
      features="",  # feature directory; "" = extracted on first use from features.init_from
      # Ground truth for evaluation, ActivityNet format; "" = the feature directory's
      # ground_truth.json (e.g. the official activity_net.v1-3.min.json instead).
      ground_truth="",
      benchmark="shapesworld",
      num_classes=-1,  # -1: the benchmark's (ShapesWorld 9, ActivityNet 200)
      num_steps=24,  # features resampled to this many steps per video
      max_segments=16,  # ground-truth segments per video in a batch (more is an error)
      # The head (svilm/models/localization_head.py).
      width=128,
      num_levels=4,  # pyramid levels, strides 1, 2, 4, ...
      embed_layers=2,
      stem_blocks=1,
      num_heads=4,
      head_layers=2,
      dropout=0.1,
      # Level l trains on segments whose farthest boundary from the point lies in
      # [r[l], r[l + 1]) base steps (-1: unbounded), ActionFormer's ranges scaled to L (?).
      regression_ranges=(0, 4, 8, 16, -1),
      centre_radius=1.5,  # centre sampling, in strides (<= 0: off)
      focal_alpha=0.25,
      focal_gamma=2.0,
      regression_weight=1.0,
      # Post-processing (svilm/evaluators/segment_nms.py), ActionFormer's values (?).
      pre_nms_threshold=0.001,
      pre_nms_topk=2000,
      nms_method="gaussian",
      nms_sigma=0.5,
      nms_iou_threshold=0.5,  # linear / hard Soft-NMS only
      nms_min_score=0.001,
      max_predictions=100,  # per video
    )
  )


def points(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  tal = config.temporal_localization
  return localization_head.pyramid_points(tal.num_steps, tal.num_levels, tal.regression_ranges)


def load_videos(config, directory: str, split: str) -> list[dict]:
  """The split's videos from the feature directory, resampled to num_steps steps, with their
  ground truth (class ids, segments in steps) from the directory's ground_truth.json."""
  tal = config.temporal_localization
  index = feature_store.read_index(directory)
  dim = feature_extraction.feature_dim(config)
  require(
    index["feature_dim"] == dim,
    f"the features in {directory} have {index['feature_dim']} dimensions, the config's "
    f"encoder gives {dim} (model.video.width, features.pooling)",
  )
  classes = index["classes"] or [f"class_{i}" for i in range(tal.num_classes)]
  require(
    len(classes) == tal.num_classes,
    f"the features in {directory} have {len(classes)} classes, "
    f"temporal_localization.num_classes is {tal.num_classes}",
  )
  ids = {name: i for i, name in enumerate(classes)}
  database = feature_store.read_ground_truth(directory)
  videos = feature_store.load_split(directory, index, split)
  for video in videos:
    scale = tal.num_steps / video["duration"]
    annotations = database.get(video["video_id"], {}).get("annotations", [])
    unknown = sorted({a["label"] for a in annotations} - set(ids))
    require(not unknown, f"ground-truth labels {unknown} are not among the feature classes")
    require(
      len(annotations) <= tal.max_segments,
      f"video {video['video_id']} has {len(annotations)} segments, more than "
      f"temporal_localization.max_segments={tal.max_segments}",
    )
    segments = np.zeros((tal.max_segments, 2), np.float32)
    labels = np.full((tal.max_segments,), -1, np.int32)
    for k, annotation in enumerate(annotations):
      segments[k] = np.asarray(annotation["segment"], np.float64) * scale
      labels[k] = ids[annotation["label"]]
    video.update(
      steps=feature_store.resample(
        video["features"], video["windows"], video["duration"], tal.num_steps
      ),
      segments=segments,
      labels=labels,
      classes=classes,
    )
  return videos


def compute_loss(params, batch, rng, *, model, config):
  tal = config.temporal_localization
  logits, offsets = model.apply(
    {"params": params}, batch["features"], train=True, rngs={"dropout": rng}
  )
  cls_target, reg_target = localization_head.assign_targets(
    batch["segments"], batch["segment_labels"], points(config), tal.centre_radius
  )
  positive = cls_target >= 0
  count = jnp.maximum(jnp.sum(positive), 1).astype(jnp.float32)
  onehot = jax.nn.one_hot(cls_target, tal.num_classes)  # all zeros for background (-1)
  focal = losses.sigmoid_focal_loss(logits, onehot, tal.focal_alpha, tal.focal_gamma)
  classification = jnp.sum(focal) / count
  diou = losses.segment_diou_loss(offsets, reg_target)
  regression = jnp.sum(jnp.where(positive, diou, 0.0)) / count
  total = classification + tal.regression_weight * regression
  return total, {
    "loss/classification": classification,
    "loss/regression": regression,
    "loss/total": total,
    "train/positives_per_video": jnp.sum(positive) / positive.shape[0],
  }


class TemporalLocalizationTask(base.Task):
  """The localization head on extracted features (configs/temporal_localization.py)."""

  name = "temporal_localization"
  init_from_map = {"?head": "head"}  # a run of this task; a pretraining checkpoint has no head

  def validate_config(self, config, vocab_size):
    video_text.validate_video_text_config(config, vocab_size)
    feature_extraction.validate_features_config(config)
    tal = config.temporal_localization
    require(
      tal.benchmark in BENCHMARKS,
      f"temporal_localization.benchmark={tal.benchmark!r} is not one of {sorted(BENCHMARKS)}",
    )
    require(
      tal.benchmark == "shapesworld" or config.data.path or tal.features,
      f"temporal_localization.benchmark={tal.benchmark!r} reads your shards: pass "
      "--config.data.path=SHARD_DIR (python -m data_pipelines.readers.activitynet), or the "
      "features extracted from them as --config.temporal_localization.features=DIR",
    )
    if tal.num_classes == -1:
      tal.num_classes = BENCHMARKS[tal.benchmark]
    require(tal.num_classes >= 1, f"temporal_localization.num_classes={tal.num_classes} < 1")
    smallest = 2 ** (tal.num_levels - 1)
    require(
      tal.num_levels >= 1 and tal.num_steps >= smallest,
      f"temporal_localization.num_steps={tal.num_steps} is shorter than the coarsest "
      f"pyramid stride 2^(num_levels - 1) = {smallest}",
    )
    require(
      len(tal.regression_ranges) == tal.num_levels + 1,
      f"temporal_localization.regression_ranges needs num_levels + 1 = {tal.num_levels + 1} "
      f"bounds, got {len(tal.regression_ranges)}",
    )
    require(
      tal.width % tal.num_heads == 0,
      f"temporal_localization.width={tal.width} is not divisible by num_heads={tal.num_heads}",
    )
    require(tal.max_segments >= 1, "temporal_localization.max_segments must be >= 1")
    require(
      tal.nms_method in NMS_METHODS,
      f"temporal_localization.nms_method={tal.nms_method!r} is not one of {NMS_METHODS}",
    )
    require(tal.nms_sigma > 0, f"temporal_localization.nms_sigma={tal.nms_sigma} must be > 0")
    require(
      config.data.host_split == "stream",
      "temporal_localization reads every feature on every host: set data.host_split='stream'",
    )

  def build_model(self, config):
    tal = config.temporal_localization
    return LocalizationModel(
      head=dict(
        num_classes=tal.num_classes,
        width=tal.width,
        num_levels=tal.num_levels,
        embed_layers=tal.embed_layers,
        stem_blocks=tal.stem_blocks,
        num_heads=tal.num_heads,
        head_layers=tal.head_layers,
        dropout=tal.dropout,
        dtype=jnp.dtype(config.model.dtype),
      )
    )

  def dummy_batch(self, config, batch_size):
    tal = config.temporal_localization
    dim = feature_extraction.feature_dim(config)
    return {
      "features": jnp.zeros((batch_size, tal.num_steps, dim)),
      "segments": jnp.zeros((batch_size, tal.max_segments, 2)),
      "segment_labels": jnp.full((batch_size, tal.max_segments), -1, jnp.int32),
    }

  def init_variables(self, model, config, rngs, batch):
    return model.init(rngs, batch["features"], train=False)

  def loss_fn(self, params, batch, rng, *, model, config):
    return compute_loss(params, batch, rng, model=model, config=config)

  def train_dataset(self, config, data, *, start_index, process_index, process_count):
    """Every host holds the training features (they are small) and keeps its rows of each
    global batch, so the batches do not depend on the number of hosts; the stream (shuffled
    with config.seed, repeated) is positioned at `start_index` for an exact resume."""
    videos = load_videos(
      config, feature_extraction.cached_feature_dir(config), config.data.train_split
    )
    arrays = {
      "features": np.stack([v["steps"] for v in videos]),
      "segments": np.stack([v["segments"] for v in videos]),
      "segment_labels": np.stack([v["labels"] for v in videos]),
    }
    local = config.batch_size // process_count
    ds = tf.data.Dataset.from_tensor_slices(arrays).repeat()
    ds = ds.shuffle(len(videos), seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.enumerate().skip(start_index)
    ds = ds.map(lambda i, x: {**x, "index": tf.cast(i, tf.int32)})
    ds = ds.batch(config.batch_size, drop_remainder=True)
    begin = process_index * local
    ds = ds.map(lambda b: {k: v[begin : begin + local] for k, v in b.items()})
    return ds.prefetch(tf.data.AUTOTUNE)

  evaluator_types = ("heldout",)

  def build_evaluator(self, kind, config, data, *, model, mesh, params_shardings):
    from svilm.evaluators import temporal_localization_eval

    directory = feature_extraction.cached_feature_dir(config)
    return temporal_localization_eval.LocalizationEvaluator(
      config,
      model,
      mesh,
      params_shardings,
      feature_dir=directory,
      split=config.data.eval_split,
    )


class LocalizationModel(nn.Module):
  """The head under the name `head` (so init_from_map can address it)."""

  head: dict

  @nn.compact
  def __call__(self, features, *, train: bool):
    return localization_head.LocalizationHead(**self.head, name="head")(features, train=train)
