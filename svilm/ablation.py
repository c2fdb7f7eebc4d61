r"""The paper's loss ablation (its Table 6) on ShapesWorld, as one resumable command.

  python -m svilm.ablation --workdir=DIR [--seeds=3] [--variant=tiny] \
      [--rows=contrast,grounding,temporal,all,all_paper_negatives,all_8_local,all_8_global] \
      [--tasks=zero_shot,action_recognition,video_qa,temporal_localization] \
      [--output=docs/ablation.md]

Pretrains configs/pretrain.py once per row and seed, then runs each downstream task from each
pretraining run, and writes the table (mean and standard deviation over seeds per cell, the
paper's rows beside ours, and whether each of the paper's directions is reproduced) to
--output. Rows (ROWS): the paper's four, L_contrast alone (no cut-and-paste: it exists for
L_t), + L_g, + L_t (with cut-and-paste), all three (the default recipe); and three controls,
each answering one question with the zero-shot metrics only: all three with L_g's negatives
as the paper's formula has them (loss.grounding_exclude_background=False: the false-negative
fix measured), and all three on a fake 8-device mesh with local and with global
cut-and-paste backgrounds (on one device the two are the same draw). Tasks (TASKS): zero_shot
reads the pretraining run's own held-out evaluation (text-to-video R@1, pointing, temporal
grouping); the others run configs/<task>.py from the pretraining checkpoint (the
action-recognition linear probe, QA, temporal localization on extracted features).

Every run is a separate process (`python -m svilm.main ...`) in DIR/<row>/seed<k>/<task>, run
one at a time; a finished run leaves `done` in its workdir and is skipped when the command is
rerun, and an interrupted one resumes from its checkpoints. The table is rewritten after every
run, so a partial ablation shows what is finished (cells without runs are empty). --variant=
tiny runs the tiny configs (seconds per run; the CI check), which measure nothing.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from typing import NamedTuple

from absl import app
from absl import flags

EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


class Row(NamedTuple):
  label: str
  overrides: dict  # pretraining config overrides
  env: dict = {}  # environment of the row's processes (e.g. a fake 8-device mesh)
  tasks: tuple | None = None  # the tasks the row is for (None: all); the others stay empty


ROWS = {
  "contrast": Row(
    "L_contrast",
    {"loss.temporal_weight": 0, "loss.grounding_weight": 0, "cut_and_paste.enabled": False},
  ),
  "grounding": Row("+ L_g", {"loss.temporal_weight": 0, "cut_and_paste.enabled": False}),
  "temporal": Row("+ L_t", {"loss.grounding_weight": 0}),
  "all": Row("+ L_g + L_t (S-ViLM, the default)", {}),
  # Controls, each for one question, so only the zero-shot metrics that answer it.
  "all_paper_negatives": Row(
    "+ L_g + L_t, L_g keeping the false negatives",
    {"loss.grounding_exclude_background": False},
    tasks=("zero_shot",),
  ),
  "all_8_local": Row(
    "+ L_g + L_t, 8 devices, local backgrounds (the default)",
    {"cut_and_paste.background": "local"},
    EIGHT_DEVICES,
    ("zero_shot",),
  ),
  "all_8_global": Row(
    "+ L_g + L_t, 8 devices, global backgrounds",
    {"cut_and_paste.background": "global"},
    EIGHT_DEVICES,
    ("zero_shot",),
  ),
}
# task -> (metric key in eval_results.json, column label, the paper's Table 6 metric)
TASKS = {
  "zero_shot": [
    ("retrieval/t2v_R@1", "zero-shot t2v R@1", "MSR-VTT zero-shot R@1"),
    ("grounding/pointing_acc", "pointing", ""),
    ("temporal_grouping/accuracy", "temporal grouping", ""),
  ],
  "action_recognition": [("action_recognition/top1", "action linear top-1", "UCF101 linear")],
  "video_qa": [("video_qa/accuracy", "QA accuracy", "MSVD-QA")],
  "temporal_localization": [("tal/average_mAP", "TAL average mAP", "ActivityNet TAL mAP")],
}
# The paper's Table 6 (VideoCC pretraining), the rows the comparison needs: value per metric.
PAPER = {
  "contrast": {
    "MSR-VTT zero-shot R@1": 22.7,
    "MSVD-QA": 43.6,
    "UCF101 linear": 90.5,
    "ActivityNet TAL mAP": 33.7,
  },
  "all": {
    "MSR-VTT zero-shot R@1": 24.7,
    "MSVD-QA": 44.9,
    "UCF101 linear": 90.9,
    "ActivityNet TAL mAP": 34.2,
  },
}
DONE = "done"

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command's flags, defined when it runs (not on import: a test or tool importing this
  module keeps its own flag names free)."""
  flags.DEFINE_string("workdir", None, "Directory of all runs (a rerun resumes).")
  flags.DEFINE_integer("seeds", 3, "Seeds per row (0, 1, ...).")
  flags.DEFINE_string("variant", "", "Config variant of every run ('tiny' for a check).")
  flags.DEFINE_list("rows", list(ROWS), "Rows to run.")
  flags.DEFINE_list("tasks", list(TASKS), "Tasks to run.")
  flags.DEFINE_string("output", "docs/ablation.md", "Markdown table written here.")
  flags.DEFINE_multi_string("extra", [], "Flags added to every run (e.g. a cache dir).")
  flags.mark_flag_as_required("workdir")


def run_dir(root: str, row: str, seed: int, task: str) -> str:
  return os.path.join(root, row, f"seed{seed}", task)


def commands(root: str, row: str, seed: int, task: str, variant: str, extra) -> list[list[str]]:
  """The `python -m svilm.main` argv that produces run (row, seed, task); [] for zero_shot,
  which reads the pretraining run."""
  suffix = f":{variant}" if variant else ""
  pretrain = run_dir(root, row, seed, "pretrain")
  if task == "pretrain":
    overrides = [f"--config.{k}={v}" for k, v in ROWS[row].overrides.items()]
    config = f"--config=configs/pretrain.py{suffix}"
  elif task == "zero_shot":
    return []
  elif task == "temporal_localization":
    overrides = [f"--config.features.init_from={pretrain}"]
    config = f"--config=configs/temporal_localization.py{suffix}"
  else:
    overrides = [f"--config.init_from={pretrain}"]
    config = f"--config=configs/{task}.py{suffix}"
  workdir = run_dir(root, row, seed, task)
  return [
    [sys.executable, "-m", "svilm.main", config, f"--workdir={workdir}", f"--config.seed={seed}"]
    + overrides
    + list(extra)
  ]


def runs_task(row: str, task: str) -> bool:
  return ROWS[row].tasks is None or task in ROWS[row].tasks


def run_once(argv: list[str], workdir: str, env: dict | None = None) -> None:
  """Runs `argv` (with `env` added to the environment) unless `workdir` holds `done`; logs
  into workdir/log.txt; fails loudly."""
  if os.path.exists(os.path.join(workdir, DONE)):
    return
  os.makedirs(workdir, exist_ok=True)
  print(" ".join(argv), flush=True)
  with open(os.path.join(workdir, "log.txt"), "a") as log:
    result = subprocess.run(
      argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
  if result.returncode:
    raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}); see {workdir}/log.txt")
  open(os.path.join(workdir, DONE), "w").close()


def collect(root: str, rows, seeds: int, tasks) -> dict:
  """{row: {metric key: [value per finished seed]}} from the runs' eval_results.json."""
  out = {}
  for row in rows:
    values = {}
    for task in tasks:
      source = "pretrain" if task == "zero_shot" else task
      for key, _, _ in TASKS[task]:
        values[key] = []
        for seed in range(seeds):
          workdir = run_dir(root, row, seed, source)
          if not os.path.exists(os.path.join(workdir, DONE)):
            continue
          with open(os.path.join(workdir, "eval_results.json")) as f:
            values[key].append(json.load(f)[key])
    out[row] = values
  return out


def _cell(values) -> str:
  if not values:
    return ""
  if len(values) == 1:
    return f"{values[0]:.3f} (1 seed)"
  return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def verdict(better, worse, expect: str = "better") -> tuple[str, float | None]:
  """(label, margin), margin = (mean(better) - mean(worse)) / sqrt(sd1^2 + sd2^2).

  expect="better", whether `better` (the paper's higher row) beats `worse` here: reproduced:
  margin >= 2; same direction within noise: 0 < margin < 2; not reproduced: margin <= 0.
  expect="same", whether a change that should not matter left the metric alone: unchanged
  within noise: |margin| < 2; changed: |margin| >= 2."""
  if len(better) < 2 or len(worse) < 2:
    return "not enough seeds", None
  diff = statistics.mean(better) - statistics.mean(worse)
  noise = (statistics.stdev(better) ** 2 + statistics.stdev(worse) ** 2) ** 0.5
  if noise > 0:
    margin = diff / noise
  else:  # identical seeds on both sides: any difference is beyond the (zero) noise
    margin = 0.0 if diff == 0 else math.copysign(float("inf"), diff)
  if expect == "same":
    return ("unchanged within noise" if abs(margin) < 2 else "changed"), margin
  if margin >= 2:
    return "reproduced", margin
  if margin > 0:
    return "same direction, within noise", margin
  return "not reproduced", margin


def _line(*cells: str) -> str:
  return "| " + " | ".join(cells) + " |"


def markdown(results: dict, rows, seeds: int, tasks, variant: str, progress: str = "") -> str:
  """The ablation page: the table of our runs, the paper's rows, the verdicts; `progress`
  (e.g. "7 of 60 runs finished") says how complete it is."""
  columns = [(key, label, paper, task) for task in tasks for key, label, paper in TASKS[task]]
  lines = [
    "# The S-ViLM loss ablation on ShapesWorld",
    "",
    "Written by `python -m svilm.ablation"
    + (f" --variant={variant}" if variant else "")
    + f" --seeds={seeds}` (svilm/ablation.py: what each row and column is). Cells: mean ± "
    "standard deviation over the finished seeds." + (f" Progress: {progress}." if progress else ""),
    "",
    _line("row", *(label for _, label, _, _ in columns)),
    "|---|" + "---|" * len(columns),
  ]
  for row in rows:
    cells = [
      _cell(results[row][key]) if runs_task(row, task) else "not run" for key, _, _, task in columns
    ]
    lines.append(_line(ROWS[row].label, *cells))
  for row, values in PAPER.items():
    cells = [str(values.get(paper, "")) if paper else "" for _, _, paper, _ in columns]
    lines.append(_line(f"paper, {ROWS[row].label} (VideoCC, their benchmarks)", *cells))
  lines += [
    "",
    "## The paper's directions, here",
    "",
    "Row A against row B, per metric: *reproduced* where A beats B by at least 2 (margin ="
    " difference of means / sqrt(sd_A^2 + sd_B^2)), *same direction, within noise* below"
    " that, *not reproduced* at or below 0; for a change that should not matter, *unchanged"
    " within noise* where |margin| < 2. The paper's own numbers for A and B follow the"
    " comparison they belong to.",
    "",
    _line("A vs B", *(label for _, label, _, _ in columns)),
    "|---|" + "---|" * len(columns),
  ]
  # (row A, row B, what is compared, expected: "better" = A beats B, as the paper says that
  # every added loss helps; "same" = the change should not matter)
  comparisons = (
    ("all", "contrast", "all three losses vs L_contrast alone", "better"),
    ("grounding", "contrast", "adding L_g to L_contrast", "better"),
    ("temporal", "contrast", "adding L_t (and cut-and-paste) to L_contrast", "better"),
    ("all", "grounding", "adding L_t (and cut-and-paste) to L_contrast + L_g", "better"),
    ("all", "temporal", "adding L_g to L_contrast + L_t", "better"),
    ("all", "all_paper_negatives", "L_g without its false negatives vs with them", "better"),
    ("all_8_local", "all_8_global", "local vs global backgrounds on 8 devices", "same"),
  )
  for a, b, what, expect in comparisons:
    if a not in rows or b not in rows:
      continue
    cells = []
    for key, _, _, task in columns:
      if not (runs_task(a, task) and runs_task(b, task)):
        cells.append("not run")
        continue
      state, margin = verdict(results[a][key], results[b][key], expect)
      cells.append(state if margin is None else f"**{state}**, {margin:+.1f} sd")
    lines.append(_line(what, *cells))
    if a in PAPER and b in PAPER:
      claims = [f"{PAPER[b][p]} -> {PAPER[a][p]}" if p else "" for _, _, p, _ in columns]
      lines.append(_line("the paper (VideoCC, their benchmarks)", *claims))
  return "\n".join(lines) + "\n"


def jobs(rows, seeds: int, tasks) -> list[tuple[str, int, str]]:
  """The (row, seed, task) runs, in order: every pretraining run first (seed-major: seed 0 of
  every row before seed 1), then the downstream runs, so a partial ablation covers whole
  rows. zero_shot has no run of its own (it reads the pretraining run)."""
  out = [(row, seed, "pretrain") for seed in range(seeds) for row in rows]
  out += [
    (row, seed, task)
    for seed in range(seeds)
    for row in rows
    for task in tasks
    if task != "zero_shot" and runs_task(row, task)
  ]
  return out


def write_page(root: str, rows, seeds: int, tasks, variant: str, output: str) -> None:
  """Writes the page for the runs under `root` as they stand (finished runs only) to `output`."""
  planned = jobs(rows, seeds, tasks)
  done = sum(os.path.exists(os.path.join(run_dir(root, *job), DONE)) for job in planned)
  results = collect(root, rows, seeds, tasks)
  page = markdown(results, rows, seeds, tasks, variant, f"{done} of {len(planned)} runs finished")
  with open(output, "w") as f:
    f.write(page)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.rows) - set(ROWS)) + sorted(set(FLAGS.tasks) - set(TASKS))
  if unknown:
    sys.exit(f"FATAL unknown rows or tasks {unknown}; rows: {list(ROWS)}, tasks: {list(TASKS)}")
  root, rows, tasks = os.path.abspath(FLAGS.workdir), FLAGS.rows, FLAGS.tasks
  seeds, variant = FLAGS.seeds, FLAGS.variant

  for row, seed, task in jobs(rows, seeds, tasks):
    for argv in commands(root, row, seed, task, variant, FLAGS.extra):
      run_once(argv, run_dir(root, row, seed, task), ROWS[row].env)
      write_page(root, rows, seeds, tasks, variant, FLAGS.output)
  write_page(root, rows, seeds, tasks, variant, FLAGS.output)
  print(f"Ablation written to {FLAGS.output}", flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
