r"""Slides a frozen S-ViLM video encoder over whole videos and writes one feature row per window.

  python -m svilm.extract_features --config=configs/temporal_localization.py --init_from=W \
      [--data=SHARD_DIR] --output=DIR [--splits=train,val]

See svilm/feature_extraction.py for how windows are cut and encoded, and svilm/feature_store.py
for the output: .npy per video, index.json (window times), ground_truth.json (ActivityNet
format, segments from the shards' annotations), settings.json. --init_from is a pretraining
workdir or checkpoint (newest step unless named), or `random` for the encoder's fresh
initialisation from config.seed (the control that shows what pretraining adds). --data is a
directory of shards (default: config.data.path, or the config's ShapesWorld, built on first
use). A rerun resumes: videos already written are skipped, and the result equals an
uninterrupted run's.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/...).")
_INIT_FROM = flags.DEFINE_string(
  "init_from", None, "Workdir or checkpoint of the encoder, or `random` (fresh from config.seed)."
)
_DATA = flags.DEFINE_string("data", "", "Shard directory (default: the config's data).")
_OUTPUT = flags.DEFINE_string("output", None, "Feature directory (created; a rerun resumes).")
_SPLITS = flags.DEFINE_list("splits", [], "Splits to extract (default: train and eval splits).")
flags.mark_flags_as_required(["config", "init_from", "output"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  try:
    _main()
  except ValueError as e:  # a user mistake (config, paths, checkpoint): one FATAL line
    sys.exit(f"FATAL {e}")


def _main() -> None:
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  from svilm import feature_extraction as fx

  config = _CONFIG.value
  fx.validate_features_config(config)
  shard_dir, splits = fx.feature_source(config, _DATA.value, _SPLITS.value)
  params, source = fx.encoder_params(config, _INIT_FROM.value)
  settings = fx.feature_settings(config, source)
  began = time.perf_counter()
  stats = fx.extract(
    config, params, shard_dir=shard_dir, splits=splits, output=_OUTPUT.value, settings=settings
  )
  wall = time.perf_counter() - began
  rate = stats["windows"] / max(stats["compute_seconds"], 1e-9)
  print(
    f"Features of {stats['videos']} videos written ({stats['resumed']} already there) to "
    f"{_OUTPUT.value} in {wall:.1f} s: {stats['windows']} windows, {rate:.1f} windows/s, "
    f"{stats['seconds_of_video'] / max(stats['compute_seconds'], 1e-9):.1f} s of video per "
    "second (decoding and encoding)",
    flush=True,
  )


if __name__ == "__main__":
  app.run(main)
