r"""Offline evaluation: score prediction files in a benchmark's own format, without a model.

  python -m svilm.evaluate temporal_localization --ground_truth=GT.json \
      --predictions=PRED.json [--subset=validation]

Prints one JSON line of metrics on stdout (the same keys the task's evaluator writes to
eval_results.json). A missing or malformed file is one FATAL line and exit status 1.

Tasks:
  temporal_localization  ActivityNet v1.3 detection: GT.json is the release's
                         {"database": {video: {"subset", "annotations": [{"segment",
                         "label"}]}}}, PRED.json the challenge's {"results": {video:
                         [{"label", "score", "segment": [t0, t1]}]}}; mAP at tIoU
                         0.50:0.05:0.95 and their average, exactly as defined in
                         svilm/evaluators/temporal_localization.py.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags

_GROUND_TRUTH = flags.DEFINE_string(
  "ground_truth", None, "The benchmark's ground-truth file (temporal_localization: GT.json)."
)
_PREDICTIONS = flags.DEFINE_string(
  "predictions", None, "The prediction file, in the benchmark's results format."
)
_SUBSET = flags.DEFINE_string(
  "subset", "validation", "temporal_localization: the ground truth's subset to score."
)


def _temporal_localization() -> dict[str, float]:
  from svilm.evaluators import temporal_localization

  return temporal_localization.evaluate_files(
    _GROUND_TRUTH.value, _PREDICTIONS.value, _SUBSET.value
  )


TASKS = {"temporal_localization": _temporal_localization}


def main(argv) -> None:
  if len(argv) != 2 or argv[1] not in TASKS:
    sys.exit(
      f"FATAL give one task: python -m svilm.evaluate TASK --ground_truth=... "
      f"--predictions=...; tasks: {', '.join(sorted(TASKS))}"
    )
  for flag in (_GROUND_TRUTH, _PREDICTIONS):
    if not flag.value:
      sys.exit(f"FATAL --{flag.name} is required")
  try:
    metrics = TASKS[argv[1]]()
  except (OSError, ValueError, KeyError, TypeError) as e:
    sys.exit(f"FATAL {argv[1]}: {type(e).__name__}: {e}")
  print(json.dumps(metrics, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
