r"""XLA compiler options compared on the real train step, in one process, A B A B.

  python benchmarks/compiler_options.py --config=configs/pretrain.py \
      --variant='scheduler={"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"}' \
      --variant='no_ynn={"xla_cpu_experimental_ynn_fusion_type": ""}' [--steps=8] [--repeats=5]

XLA_FLAGS applies to a whole process, so comparing flags across processes mixes the flag's
effect with the machine's drift between runs (shared machines drift by 10-20 percent). Here every
variant is the same jitted train step (svilm.trainers.train_step.jit_train_step on a fixed
random batch, as benchmarks/train_step.py) compiled with its own options through
`Lowered.compile(compiler_options)`, and the variants take turns: each of --repeats rounds
runs --steps steps of the baseline (no options), then of each variant. Reported per variant: median step
ms (min, max) over all rounds and the ratio to the baseline's median; the baseline runs
twice per round (first and last) so the noise floor is visible as its own ratio.

Option names are XLA DebugOptions fields (enum values spelled out, e.g.
LIBRARY_FUSION_TYPE_DOT); an unknown name fails before anything is timed. The last stdout
line is a JSON object: {"variants": [{"name", "options", "step_ms", "min_ms", "max_ms",
"ratio"}, ...]}.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# train_step defines --config, --steps (per variant per round), --warmup, --repeats (the
# rounds here) and --vocab_size; this script shares them.
from benchmarks import train_step  # noqa: E402

_VARIANTS = flags.DEFINE_multi_string("variant", [], "NAME=JSON object of compiler options.")


def parse_variant(text: str) -> tuple[str, dict]:
  """'name={"option": value}' -> (name, options); raises ValueError naming the bad part."""
  name, sep, options = text.partition("=")
  if not sep or not name:
    raise ValueError(f"--variant must be NAME=JSON, got {text!r}")
  try:
    parsed = json.loads(options)
  except json.JSONDecodeError as e:
    raise ValueError(f"--variant {name}: options are not JSON ({e}): {options!r}") from None
  if not isinstance(parsed, dict):
    raise ValueError(f"--variant {name}: options must be a JSON object, got {options!r}")
  return name, parsed


def compare(
  config, variants: list[tuple[str, dict]], *, steps: int, rounds: int, warmup: int
) -> list[dict]:
  """Times the train step of a finalized `config` under each (name, options), interleaved."""
  import jax
  import numpy as np

  step, init, batch, _ = train_step.build_train_step(config)
  # The baseline runs first and last in every round: its two ratios show the noise floor.
  runs = [("baseline", {})] + variants + [("baseline (again)", {})]
  lowered = step.lower(init(), batch)
  compiled = {}
  for _, options in runs:
    if json.dumps(options, sort_keys=True) not in compiled:
      compiled[json.dumps(options, sort_keys=True)] = lowered.compile(options)
  states = [init() for _ in runs]
  times = [[] for _ in runs]

  def run(i: int) -> float:
    start = time.perf_counter()
    states[i], metrics = compiled[json.dumps(runs[i][1], sort_keys=True)](states[i], batch)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  for i in range(len(runs)):
    for _ in range(warmup):
      run(i)
  for _ in range(rounds):
    for i in range(len(runs)):
      times[i].extend(run(i) for _ in range(steps))
  base = float(np.median(times[0]))
  return [
    {
      "name": name,
      "options": options,
      "step_ms": 1e3 * float(np.median(t)),
      "min_ms": 1e3 * min(t),
      "max_ms": 1e3 * max(t),
      "ratio": float(np.median(t)) / base,
    }
    for (name, options), t in zip(runs, times)
  ]


def main(argv) -> None:
  del argv
  import jax

  from svilm import configuration

  variants = [parse_variant(v) for v in _VARIANTS.value]
  config = train_step._CONFIG.value
  vocab = (
    config.model.text.vocab_size if config.model.text.vocab_size != -1 else train_step._VOCAB.value
  )
  config = configuration.finalize(
    config, num_devices=jax.device_count(), process_count=jax.process_count(), vocab_size=vocab
  )
  results = compare(
    config,
    variants,
    steps=train_step._STEPS.value,
    rounds=train_step._REPEATS.value,
    warmup=train_step._WARMUP.value,
  )
  for r in results:
    print(
      f"{r['step_ms']:8.1f} ms ({r['min_ms']:.1f}-{r['max_ms']:.1f})  ratio "
      f"{r['ratio']:.3f}  {r['name']} {r['options'] or ''}",
      flush=True,
    )
  print(json.dumps({"variants": results}))


if __name__ == "__main__":
  from svilm import host_memory

  host_memory.ensure_malloc_hugepages()  # re-executes once: svilm/host_memory.py
  app.run(main)
