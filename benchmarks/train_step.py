r"""Train-step speed and model FLOPs utilisation (MFU) of a pretraining config.

  python benchmarks/train_step.py --config=configs/pretrain.py [--config.batch_size=64 ...]
      [--steps=20] [--warmup=3] [--repeats=5]

Runs the real jitted train step (svilm.trainers.train_step.jit_train_step: model, losses,
cut-and-paste, AdamW; the configured mesh, dtype, remat and accumulation) on a fixed random
batch, so the input pipeline is not timed. Reports:

  step_time_ms      median wall time of a step after warm-up (min and max too), timed in
                    `repeats` blocks of `steps` steps, each block ending in block_until_ready
  flops_per_step    model FLOPs of one step over all devices (compile_check.model_flops_per_step:
                    XLA's cost analysis with layers unrolled; recomputation not counted)
  peak_flops        CPU: a 2048^3 float32 matmul measured in this process with the same
                    threads (all devices' cores together); GPU/TPU: the chip's published dense
                    bf16 peak times the device count
  mfu               flops_per_step / step_time / peak_flops
  peak_memory_bytes XLA's per-device estimate for the compiled step (arguments + outputs -
                    aliased + temporaries); on GPU also the allocator's measured peak
  examples_per_sec  batch_size / step_time
  cpu_utilisation   process CPU time / wall time / cores during the timed steps (CPU only)
  page_faults_per_step  minor page faults of the process per timed step: fresh 4 KiB pages
                    the kernel had to map (svilm/host_memory.py explains why they matter)

The last line of stdout is one JSON object with these figures.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/pretrain.py", "Pretraining config.", lock_config=True
)
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed block.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks; the step time is their median.")
_VOCAB = flags.DEFINE_integer("vocab_size", 512, "Text vocabulary when the config says -1.")

# Published dense bf16 peak FLOP/s per chip, by jax's device_kind.
ACCELERATOR_PEAK_FLOPS = {
  "NVIDIA H100 80GB HBM3": 989e12,
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA A100-SXM4-80GB": 312e12,
  "NVIDIA A100-SXM4-40GB": 312e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
  "TPU v6e": 918e12,
}


def cpu_matmul_peak(size: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a float32 [size, size] @ [size, size] matmul on the CPU, median of `repeats`.

  Runs on one XLA:CPU device, which uses all the process's cores (Eigen's thread pool), as a
  train step on one device does.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / float(np.median(times))


def peak_flops(devices) -> float:
  """The peak FLOP/s `devices` together can reach (see the module docstring)."""
  if devices[0].platform == "cpu":
    return cpu_matmul_peak()
  kind = devices[0].device_kind
  peak = ACCELERATOR_PEAK_FLOPS.get(kind)
  if peak is None:
    raise ValueError(
      f"No published bf16 peak for device kind {kind!r}: add it to ACCELERATOR_PEAK_FLOPS"
    )
  return peak * len(devices)


def random_batch(config, rng):
  """A batch with the training contract's shapes: uniform pixels, random in-vocabulary tokens."""
  import numpy as np

  from svilm import tasks

  shapes = {
    k: v.shape for k, v in tasks.get(config.task).dummy_batch(config, config.batch_size).items()
  }
  batch = {"video": rng.uniform(size=shapes["video"]).astype(np.float32)}
  for key in ("text_tokens", "noun_tokens"):
    batch[key] = rng.integers(1, config.model.text.vocab_size, shapes[key]).astype(np.int32)
  for key in ("text_mask", "noun_mask", "noun_valid"):
    batch[key] = np.ones(shapes[key], np.int32)
  return batch


def build_train_step(config):
  """The benchmarked step of a finalized `config` on all devices: (step, init, batch, mesh).

  step: the jitted train step (trainer.setup(config).jit_train_step() on the configured mesh);
  init(): a fresh train state on the step's shardings; batch: `random_batch` as global arrays.
  """
  import numpy as np

  from svilm import sharding
  from svilm.trainers import trainer

  ctx = trainer.setup(config)
  batch = sharding.to_global(random_batch(ctx.config, np.random.default_rng(0)), ctx.mesh)
  return ctx.jit_train_step(), ctx.init_state, batch, ctx.mesh


def time_train_step(config, *, steps: int, warmup: int, repeats: int) -> dict:
  """Compiles and times the train step of a finalized `config` on all devices."""
  import jax
  import numpy as np

  from svilm import compile_check

  step, init, batch, mesh = build_train_step(config)
  state = init()
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  for _ in range(warmup + 1):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  block_times, cpu = [], []
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(repeats):
    wall, process = time.perf_counter(), time.process_time()
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - wall
    block_times.append(elapsed / steps)
    cpu.append((time.process_time() - process) / elapsed / os.cpu_count())
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  step_time = float(np.median(block_times))
  flops = compile_check.model_flops_per_step(config)
  peak = peak_flops(jax.devices())
  result = {
    "step_time_ms": step_time * 1e3,
    "step_time_min_ms": min(block_times) * 1e3,
    "step_time_max_ms": max(block_times) * 1e3,
    "flops_per_step": flops,
    "peak_flops": peak,
    "mfu": flops / step_time / peak,
    "examples_per_sec": config.batch_size / step_time,
    "peak_memory_bytes": compile_check.peak_bytes(memory),
    "compile_s": compile_s,
    "devices": jax.device_count(),
    "device_kind": jax.devices()[0].device_kind,
    "mesh": dict(mesh.shape),
    "batch_size": config.batch_size,
    "dtype": config.model.dtype,
    "remat": config.model.remat,
    "scan_layers": config.model.scan_layers,
    "loss": float(metrics["loss/total"]),
    "page_faults_per_step": faults / (repeats * steps),
    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
  }
  if jax.devices()[0].platform == "cpu":
    result["cpu_utilisation"] = float(np.median(cpu))
  else:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      result["measured_peak_memory_bytes"] = stats["peak_bytes_in_use"]
  return result


def main(argv) -> None:
  del argv
  import jax

  from svilm import configuration

  config = _CONFIG.value
  vocab = config.model.text.vocab_size if config.model.text.vocab_size != -1 else _VOCAB.value
  config = configuration.finalize(
    config, num_devices=jax.device_count(), process_count=jax.process_count(), vocab_size=vocab
  )
  result = time_train_step(config, steps=_STEPS.value, warmup=_WARMUP.value, repeats=_REPEATS.value)
  print(
    f"train step: {result['step_time_ms']:.1f} ms median "
    f"({result['step_time_min_ms']:.1f}-{result['step_time_max_ms']:.1f}), "
    f"{result['flops_per_step'] / 1e9:.1f} GFLOP, peak {result['peak_flops'] / 1e9:.1f} "
    f"GFLOP/s, MFU {result['mfu']:.3f}, {result['examples_per_sec']:.1f} examples/s",
    flush=True,
  )
  print(json.dumps(result))


if __name__ == "__main__":
  from svilm import host_memory

  host_memory.ensure_malloc_hugepages()  # re-executes once: svilm/host_memory.py
  app.run(main)
