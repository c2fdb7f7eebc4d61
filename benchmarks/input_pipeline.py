r"""Input-pipeline throughput against what the train step consumes: is training input-bound?

  python benchmarks/input_pipeline.py [--resolutions=112,224] [--num_frames=16] [--batches=30]

For each resolution it builds a small ShapesWorld at that size (16-frame clips), then times the
training pipeline (parse, JPEG decode, random resized crop + flip, resize, tokenise, batch)
over `--batches` batches after warm-up, once with one tf.data thread (frames/s per core) and
once with all cores. It then measures the default config's train step on this CPU and reads
the paper config's FLOPs per example from XLA's cost analysis, and reports how many frames per
second each consumes: the default on this CPU as measured, the paper config on an H100 at an
assumed 40 percent of its 989 TFLOP/s dense bf16 peak. The last line is a JSON object of all figures.
Results go to docs/benchmarks.md by hand, with the command and the machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RESOLUTIONS = flags.DEFINE_list("resolutions", ["112", "224"], "Frame sizes to time.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 16, "Frames per clip.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per measurement.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Clips per batch.")
_CLIPS = flags.DEFINE_integer("clips", 256, "ShapesWorld clips built per resolution.")
_STEP_VARIANT = flags.DEFINE_string(
  "step_variant", "", "Variant of configs/pretrain.py whose train step is timed ('' = default)."
)
_STEP_STEPS = flags.DEFINE_integer("step_steps", 20, "Timed train steps (after 5 warm-up steps).")

H100_BF16_PEAK = 989e12
ASSUMED_MFU = 0.4


def _pipeline_frames_per_sec(files, tokenizer, resolution, threads) -> float:
  import numpy as np
  import tensorflow as tf

  from data_pipelines import input_pipeline

  ds = input_pipeline.make_dataset(
    files,
    tokenizer=tokenizer,
    batch_size=_BATCH_SIZE.value,
    num_frames=_NUM_FRAMES.value,
    frame_stride=1,
    resolution=resolution,
    max_text_len=24,
    num_nouns=2,
    max_noun_len=12,
    noun_prompt="a video of a {}",
    train=True,
    seed=0,
    shuffle_buffer=64,
    augment=input_pipeline.Augmentation(crop_area=(0.5, 1.0), flip=True),
  )
  if threads:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    ds = ds.with_options(options)
  it = ds.as_numpy_iterator()
  for _ in range(3):  # warm-up: fill prefetch and shuffle buffers
    next(it)
  times = []
  for _ in range(_BATCHES.value):
    start = time.perf_counter()
    next(it)
    times.append(time.perf_counter() - start)
  return _BATCH_SIZE.value * _NUM_FRAMES.value / float(np.median(times))


def _default_step_frames_per_sec() -> float:
  """Frames/s the default config's train step (or --step_variant's) consumes on this machine."""
  import jax

  from benchmarks import train_step
  from configs import pretrain as pretrain_config
  from svilm import configuration

  config = configuration.finalize(
    pretrain_config.get_config(_STEP_VARIANT.value),
    num_devices=jax.device_count(),
    process_count=1,
    vocab_size=512,
  )
  result = train_step.time_train_step(config, steps=_STEP_STEPS.value, warmup=5, repeats=1)
  return config.data.num_frames * result["examples_per_sec"]


def _paper_flops_per_clip() -> tuple[float, int]:
  """XLA's FLOP count of one paper-config train step per clip (batch 2), and its frames."""
  from configs import pretrain_paper
  from svilm import compile_check
  from svilm import configuration

  config = pretrain_paper.get_config("data=unused,tokenizer=unused")
  config = configuration.finalize(config, num_devices=1, process_count=1, vocab_size=30522)
  return compile_check.model_flops_per_step(config, batch_size=2) / 2, config.data.num_frames


def main(argv) -> None:
  del argv
  from data_pipelines import tokenizer as tokenizer_lib
  from data_pipelines.shapesworld import build as shapesworld_build

  cores = os.cpu_count()
  results = {"cores": cores, "num_frames": _NUM_FRAMES.value, "batch_size": _BATCH_SIZE.value}
  with tempfile.TemporaryDirectory() as tmp:
    for resolution in map(int, _RESOLUTIONS.value):
      sw = shapesworld_build.default_config()
      sw.resolution, sw.num_frames = resolution, _NUM_FRAMES.value
      sw.num_train, sw.num_val, sw.num_compositional = _CLIPS.value, 8, 4
      sw.num_shards_train = 4
      out = os.path.join(tmp, str(resolution))
      shapesworld_build.build(out, sw)
      files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.startswith("train-"))
      tokenizer = tokenizer_lib.Tokenizer(os.path.join(out, "tokenizer.model"))
      one = _pipeline_frames_per_sec(files, tokenizer, resolution, threads=1)
      full = _pipeline_frames_per_sec(files, tokenizer, resolution, threads=0)
      results[f"pipeline_frames_per_sec_per_core@{resolution}"] = round(one, 1)
      results[f"pipeline_frames_per_sec_all_cores@{resolution}"] = round(full, 1)
      print(
        f"{resolution}px: {one:.0f} frames/s on 1 thread, {full:.0f} frames/s on {cores} cores",
        flush=True,
      )
  default = _default_step_frames_per_sec()
  results["default_step_frames_per_sec_cpu"] = round(default, 1)
  print(f"default config train step on this CPU consumes {default:.0f} frames/s", flush=True)
  flops, frames = _paper_flops_per_clip()
  clips_per_sec = ASSUMED_MFU * H100_BF16_PEAK / flops
  results["paper_flops_per_clip"] = flops
  results["paper_h100_frames_per_sec_at_40pct_mfu"] = round(clips_per_sec * frames, 1)
  per_core = results.get("pipeline_frames_per_sec_per_core@224")
  if per_core:
    results["paper_cores_needed_per_h100"] = round(clips_per_sec * frames / per_core, 1)
  print(
    f"paper config: {flops / 1e12:.2f} TFLOP per clip; an H100 at 40% MFU consumes "
    f"{clips_per_sec * frames:.0f} frames/s",
    flush=True,
  )
  print(json.dumps(results))


if __name__ == "__main__":
  from svilm import host_memory

  host_memory.ensure_malloc_hugepages()  # re-executes once: svilm/host_memory.py
  app.run(main)
