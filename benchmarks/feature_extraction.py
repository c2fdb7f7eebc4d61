r"""Feature-extraction throughput (svilm/feature_extraction.py): decoding against encoding.

  python benchmarks/feature_extraction.py [--config=configs/temporal_localization.py] \
      [--videos=32] [--repeats=5]

Reads the first --videos videos of the config's held-out split (ShapesWorld long videos by
default, built on first use) and times, --repeats times each after one warm-up pass:
  decode   cutting every window of every video: JPEG decode, centre crop, resize, normalise
  encode   the frozen encoder (random initialisation: the speed does not depend on the
           weights) on the same windows, in the extractor's batches of features.batch_size
  total    the extractor's own per-video path (what `python -m svilm.extract_features` runs)
and reports medians as windows per second and seconds of video per second, and the share of
the total spent decoding. The last line is a JSON object of all figures. Results go to
docs/benchmarks.md by hand, with the command and the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/temporal_localization.py", "Config whose encoder and windows are timed."
)
_VIDEOS = flags.DEFINE_integer("videos", 32, "Videos of the held-out split to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed passes (after one warm-up pass).")


def _median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up: compilation, file cache
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    fn()
    times.append(time.perf_counter() - began)
  return statistics.median(times)


def main(argv) -> None:
  del argv
  import jax
  import numpy as np
  import tensorflow as tf

  from data_pipelines import input_pipeline
  from data_pipelines import schema
  from svilm import feature_extraction as fx
  from svilm import feature_store

  tf.config.set_visible_devices([], "GPU")
  config = _CONFIG.value
  fx.validate_features_config(config)
  root, _ = fx.feature_source(config)
  files = input_pipeline.list_shards(root, config.data.eval_split)
  videos = []
  for serialized in tf.data.TFRecordDataset(files).take(_VIDEOS.value):
    parsed = schema.parse_sequence_example(serialized, with_annotations=False)
    videos.append((parsed["frames"].numpy(), float(parsed["fps"].numpy())))
  params, _ = fx.encoder_params(config, fx.RANDOM)
  extractor = fx._Extractor(config, params)  # pylint: disable=protected-access
  starts = [
    feature_store.window_starts(len(f), extractor.window, extractor.stride) for f, _ in videos
  ]
  windows = sum(len(s) for s in starts)
  seconds = sum(len(f) / fps for f, fps in videos)

  def decode():
    out = []
    for (frames, _), video_starts in zip(videos, starts):
      cache = {}  # one video's decoded frames, as the extractor keeps them
      out.append([extractor.clip(frames, int(s), cache) for s in video_starts])
    return out

  clips = [np.stack(c) for c in decode()]
  batch = extractor.batch

  def encode():
    for video_clips in clips:
      for begin in range(0, len(video_clips), batch):
        rows = video_clips[begin : begin + batch]
        padded = np.concatenate([rows, np.zeros((batch - len(rows), *rows.shape[1:]), rows.dtype)])
        jax.block_until_ready(extractor._apply(params, padded))  # pylint: disable=protected-access

  def total():
    for frames, _ in videos:
      extractor.video_features(frames)

  repeats = _REPEATS.value
  figures = {
    "videos": len(videos),
    "windows": windows,
    "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  for name, fn in (("decode", decode), ("encode", encode), ("total", total)):
    median = _median_seconds(fn, repeats)
    figures[f"{name}_windows_per_sec"] = windows / median
    figures[f"{name}_video_seconds_per_sec"] = seconds / median
    figures[f"{name}_median_seconds"] = median
  figures["decode_share_of_total"] = (
    figures["total_windows_per_sec"] / figures["decode_windows_per_sec"]
  )
  for key, value in figures.items():
    print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")
  print(json.dumps(figures), flush=True)


if __name__ == "__main__":
  app.run(main)
