"""The final metrics as a table a person reads, each beside its chance or random baseline.

Baselines come from the results themselves: `<metric>_random` where an evaluator measured one
(a random group token, a random split), else the chance level of ranking metrics
(`retrieval.chance_level`) and of classification metrics (`classification.chance_level`), and
the majority-answer baseline of QA accuracy (`video_qa.chance_level`).
`svilm.main` prints the table on stdout at the end of a run.
"""

from __future__ import annotations

from svilm.evaluators import classification
from svilm.evaluators import retrieval
from svilm.evaluators import video_qa


def baseline(key: str, results: dict[str, float]) -> float | None:
  """The chance or random value to read `results[key]` against, or None if there is none."""
  if key + "_random" in results:
    return results[key + "_random"]
  for chance_level in (retrieval.chance_level, classification.chance_level, video_qa.chance_level):
    if (level := chance_level(key, results)) is not None:
      return level
  return None


def _number(key: str, value: float) -> str:
  return f"{value:.0f}" if key.rpartition("/")[2].startswith("num_") else f"{value:.4g}"


def format_table(results: dict[str, float], results_path: str) -> str:
  """Lines: a header naming the step and `results_path`, then `metric  value  baseline` rows
  in the evaluators' order (the `_random` baselines appear in the baseline column, not as rows
  of their own)."""
  rows = [
    (key, _number(key, value), "" if (b := baseline(key, results)) is None else _number(key, b))
    for key, value in results.items()
    if key != "step" and not (key.endswith("_random") and key[: -len("_random")] in results)
  ]
  width = max([len("metric")] + [len(key) for key, _, _ in rows])
  lines = [
    f"Final metrics at step {results.get('step', '?')} (all in {results_path}):",
    f"  {'metric':<{width}}  {'value':>8}  {'chance/random':>13}",
  ]
  lines += [f"  {key:<{width}}  {value:>8}  {base:>13}".rstrip() for key, value, base in rows]
  return "\n".join(lines)
