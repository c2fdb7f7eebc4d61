r"""A/B of one config key on the train step, timed in one process: which value is faster?

  python benchmarks/ab_step.py --config=configs/pretrain.py --key=model.text_one_call \
      --values=false,true [--blocks=8] [--steps=10] [--warmup=3]

Builds the real jitted train step (benchmarks/train_step.py's `build_train_step`, same random
batch) once per value of --key, then times blocks of --steps steps alternately, A B A B ...
(--blocks per value), so drift and neighbours' load hit both alike. Reports each value's
median step time and the ratio of every value's median to the first one's. Values are parsed
as JSON where they can be (true, 392, "x") and kept as strings otherwise. The last line is a
JSON object of all figures; results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --config, --steps (per block), --warmup and --vocab_size are train_step.py's flags.
from benchmarks import train_step as train_step_bench  # noqa: E402

_KEY = flags.DEFINE_string("key", None, "Dotted config key to vary, e.g. model.text_one_call.")
_VALUES = flags.DEFINE_list("values", None, "Its values, the first one the reference.")
_BLOCKS = flags.DEFINE_integer("blocks", 8, "Timed blocks per value.")
flags.mark_flags_as_required(["config", "key", "values"])
_CONFIG, _STEPS = train_step_bench._CONFIG, train_step_bench._STEPS  # pylint: disable=protected-access
_WARMUP, _VOCAB = train_step_bench._WARMUP, train_step_bench._VOCAB  # pylint: disable=protected-access


def _parse(value: str):
  try:
    return json.loads(value)
  except json.JSONDecodeError:
    return value


def main(argv) -> None:
  del argv
  import jax

  from svilm import configuration

  runs = []
  for raw in _VALUES.value:
    config = _CONFIG.value.copy_and_resolve_references()
    *path, leaf = _KEY.value.split(".")
    node = config
    for part in path:
      node = node[part]
    node[leaf] = _parse(raw)
    if config.model.text.vocab_size == -1:
      config.model.text.vocab_size = _VOCAB.value
    config = configuration.finalize(
      config, num_devices=jax.device_count(), process_count=1, vocab_size=None
    )
    step, init, batch, _ = train_step_bench.build_train_step(config)
    state = init()
    for _ in range(_WARMUP.value + 1):  # the first call compiles
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    runs.append({"value": raw, "step": step, "state": state, "batch": batch, "times": []})

  for _ in range(_BLOCKS.value):
    for run in runs:
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        run["state"], metrics = run["step"](run["state"], run["batch"])
      jax.block_until_ready((run["state"], metrics))
      run["times"].append((time.perf_counter() - start) / _STEPS.value)

  reference = statistics.median(runs[0]["times"])
  figures = {"key": _KEY.value, "devices": jax.device_count(), "blocks": _BLOCKS.value}
  for run in runs:
    median = statistics.median(run["times"])
    figures[f"step_time_ms@{run['value']}"] = median * 1e3
    figures[f"ratio_to_first@{run['value']}"] = median / reference
    print(
      f"{_KEY.value}={run['value']:8s} median {median * 1e3:8.1f} ms  x{median / reference:.3f}"
    )
  print(json.dumps(figures), flush=True)


if __name__ == "__main__":
  app.run(main)
