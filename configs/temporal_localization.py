r"""Temporal action localization on long videos (task `temporal_localization`): frozen S-ViLM
features extracted once, a light anchor-free head trained on them, ActivityNet detection mAP.

Commands (ShapesWorld long videos, from the default pretraining run's workdir W):

  python -m svilm.extract_features --config=configs/temporal_localization.py --init_from=W \
      --output=F
  python -m svilm.main --config=configs/temporal_localization.py \
      --config.temporal_localization.features=F --workdir=L

The first writes F/{train,val}/<video>.npy ([num_windows, D] float32), F/index.json (each
video's windows in seconds) and F/ground_truth.json (ActivityNet v1.3 format); the second
trains the head and writes L/eval_results.json (tal/mAP@0.5 ... tal/average_mAP) and
L/temporal_localization_predictions.json (ActivityNet results format). Score any results file
offline with `python -m svilm.evaluate temporal_localization`.

Variants (`--config=configs/temporal_localization.py:ARG`, comma separated):
  tiny         a seconds-long smoke run (CI): the tiny model, a tiny long-video ShapesWorld.
  activitynet  ActivityNet v1.3 (200 classes) from `python -m data_pipelines.readers.activitynet`
               shards given as --config.data.path, at the paper's model size (init_from a
               configs/pretrain_paper.py run); the ground truth is the reader's
               ground_truth.json (or the official file via temporal_localization.ground_truth).

Data: ShapesWorld long videos (data_pipelines/shapesworld/build.py `long_video_config`): 96
frames at 8 fps, 3-5 action phases of >= 8 frames among idle stretches, 9 action classes; the
ground-truth segments are the world's phases. Features: windows of 16 frames (the model's 8
frames, 2 apart, as in pretraining) every 4 frames; each window's feature is the mean of the
encoder's per-position clip features (features.pooling).

Hardware and runtime: a 2-core x86 CPU box (AMD EPYC): extraction 5 min per encoder (1280
videos), the head 2 min (1500 steps of batch 16, start-up and evaluation included).

Measured on 2026-12-01 on that machine from the default pretraining run, held-out split (256
videos, 1158 segments), 3 head seeds each (mean, standard deviation):
  pretrained features     average mAP 0.173 (0.004), mAP@0.5 0.358, blank features 0.031
  random-init features    average mAP 0.047 (0.002), mAP@0.5 0.114, blank features 0.031
The whole table and what it shows: docs/tasks.md.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs import pretrain_paper
from data_pipelines.shapesworld import build as shapesworld_build
from svilm import feature_extraction
from svilm.tasks import temporal_localization

_VARIANTS = {"tiny", "activitynet"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = set(filter(None, (arg or "").split(",")))
  unknown = variants - _VARIANTS
  if unknown:
    raise ValueError(
      f"Unknown variant(s) {sorted(unknown)} for configs/temporal_localization.py; known: "
      f"{', '.join(sorted(_VARIANTS))}"
    )
  real = "activitynet" in variants
  config = (
    pretrain_paper.paper_config()
    if real
    else pretrain.get_config("tiny" if "tiny" in variants else None)
  )
  config.task = "temporal_localization"
  del config["cut_and_paste"]  # pretraining-only keys
  del config["loss"]
  # Feature extraction (svilm/extract_features.py): the frozen video encoder of config.model
  # slides over each whole video.
  config.features = feature_extraction.features_config()
  config.temporal_localization = temporal_localization.default_config()
  config.evals = ml_collections.ConfigDict({"heldout": {"type": "heldout", "every_steps": 0}})

  world = shapesworld_build.long_video_config()
  world.num_shards_train, world.num_shards_val = 4, 2
  config.data.shapesworld = world

  config.data.host_split = "stream"  # every host reads all features (they are small)
  config.batch_size = 16
  config.total_steps = 1500
  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  config.optim.learning_rate = 1e-3  # ActionFormer's rate for AdamW (?)
  config.optim.warmup_steps = 100
  config.optim.weight_decay = 0.05
  config.eval.batch_size = 64

  if "tiny" in variants:
    world.num_train, world.num_val, world.num_compositional = 16, 8, 4
    world.num_shards_train, world.num_shards_val, world.num_shards_compositional = 2, 1, 1
    world.num_frames = 48
    world.min_phases = world.max_phases = 2
    config.features.init_from = "random"  # the smoke test needs no pretraining run
    config.features.batch_size = 16
    config.temporal_localization.num_steps = 12
    config.temporal_localization.width = 32
    config.temporal_localization.num_levels = 3
    config.temporal_localization.regression_ranges = (0, 4, 8, -1)
    config.batch_size = 8
    config.total_steps = 6
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.optim.warmup_steps = 2
    config.eval.batch_size = 8
  if real:
    tal = config.temporal_localization
    tal.benchmark = "activitynet"
    tal.num_steps = 128  # (?) features resampled to a fixed length, as ActivityNet heads do
    tal.num_levels = 6
    tal.regression_ranges = (0, 4, 8, 16, 32, 64, -1)
    tal.width = 256
    tal.max_segments = 32  # (?) above ActivityNet v1.3's most annotated videos
    tal.nms_sigma = 0.75  # ActionFormer's ActivityNet value (?)
    config.features.stride_frames = 16  # (?) one feature per 2 s at the readers' 8 fps
    config.batch_size = 16
    config.total_steps = 15_000  # (?) about 15 epochs of ActivityNet's 10k training videos
    config.optim.warmup_steps = 1000
  return config
