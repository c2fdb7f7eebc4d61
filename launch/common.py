"""What the three launch scripts share: the training command, workdir checks, and a runner.

A launch is a *plan*: a list of steps, each either a command (an argument list) or a `Poll`
(a command repeated until its output says the resource is ready). `execute` prints the plan
shell-quoted (`--dry-run`), or runs it in order and stops at the first failure. Commands are
never strings joined by hand: the printed line is `shlex.join(argv)`, so it pastes as is.
Before a real run every program the plan starts must be on PATH (`check_programs`), so a
missing `gcloud`, `xpk` or `sbatch` is one line saying how to install it, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable, Sequence, TextIO

# The checkout these scripts live in: what gets copied to TPU VMs, built into xpk images and
# `cd`-ed into by SLURM jobs (config paths such as configs/pretrain.py are relative to it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LaunchError(Exception):
  """A launch that cannot go ahead: bad flags, a missing program, or a command that failed."""


# How to get each program the launch scripts run on this machine, for the FATAL line when one
# is not on PATH.
INSTALL_HINTS = {
  "gcloud": "install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install), "
  "then `gcloud auth login`",
  "kubectl": "install it with `gcloud components install kubectl` "
  "(or see https://kubernetes.io/docs/tasks/tools/)",
  "xpk": "install it with `pip install xpk` (see https://github.com/AI-Hypercomputer/xpk)",
  "sbatch": "run this on a SLURM login node, where sbatch comes with SLURM (elsewhere install "
  "the SLURM client, e.g. `apt-get install slurm-client`, set up for the cluster)",
}
# Programs that another one runs in turn: xpk calls gcloud (credentials, images) and kubectl
# (the workload itself), and would otherwise fail half-way with its own message.
NEEDS = {"xpk": ("gcloud", "kubectl")}


@dataclasses.dataclass(frozen=True)
class Poll:
  """Runs `argv` every `interval_s` until its stripped stdout is `ready`.

  Stops with an error when the output is one of `failed` or after `timeout_s` seconds. In a dry
  run only `argv` is printed (once), since what it would answer is not knowable offline.
  """

  argv: tuple[str, ...]
  ready: str
  failed: tuple[str, ...] = ()
  interval_s: float = 30.0
  timeout_s: float = 7200.0


# A plan step: a command to run once, or a command to poll.
Step = list[str] | Poll


def add_training_flags(parser: argparse.ArgumentParser) -> None:
  """Adds --config, --workdir and --override (repeatable) to `parser`."""
  parser.add_argument(
    "--config",
    help="svilm config file as svilm.main takes it, relative to "
    "the repository root, e.g. configs/pretrain_paper.py:data=gs://b/shards",
  )
  parser.add_argument(
    "--workdir", help="checkpoints, metrics and eval_results.json; must be storage every host sees"
  )
  parser.add_argument(
    "--override",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="config override, forwarded as --config.KEY=VALUE (repeatable)",
  )


def parse_override(override: str) -> tuple[str, str]:
  """Splits 'key=value' at the first '='; the value may itself contain '=' or spaces."""
  key, sep, value = override.partition("=")
  if not sep or not key or key.startswith("-") or " " in key:
    raise LaunchError(
      f"--override={override!r} is not KEY=VALUE (e.g. --override=optim.learning_rate=1e-3)"
    )
  return key, value


def training_command(
  config: str | None, workdir: str | None, overrides: Sequence[str], python: str = "python"
) -> list[str]:
  """`python -m svilm.main --config=CONFIG --workdir=WORKDIR --config.K=V ...` as argv.

  Overrides keep their order, so a later one for the same key wins, as with svilm.main itself.
  """
  if not config or not workdir:
    raise LaunchError("--config and --workdir are required for the training step")
  argv = [python, "-m", "svilm.main", f"--config={config}", f"--workdir={workdir}"]
  for override in overrides:
    key, value = parse_override(override)
    argv.append(f"--config.{key}={value}")
  return argv


def check_gcs_workdir(workdir: str | None, where: str) -> None:
  """Refuses a workdir that is not gs://: on several TPU hosts a local path is per host."""
  if workdir is not None and not workdir.startswith("gs://"):
    raise LaunchError(
      f"--workdir={workdir} is not a gs:// path. On {where} every host runs the trainer: "
      "Orbax writes each checkpoint from all hosts together, process 0 writes metrics and "
      "eval_results.json, and every host reads the checkpoint back to resume, so all of them "
      "must see the same directory. A local path would be a different, partial directory on "
      "each host. Use a bucket the TPU service account can write, e.g. "
      "--workdir=gs://my-bucket/svilm/run1"
    )


def shell_line(argv: Sequence[str]) -> str:
  """The command as one shell line that pastes as is."""
  return shlex.join(argv)


def check_programs(plan: Sequence[Step]) -> None:
  """Raises `LaunchError` (one line) naming every program of `plan` that is not on PATH.

  Called before the first command runs, so that a missing program never leaves a launch half
  done (a TPU VM created but never installed) or ends in a FileNotFoundError traceback.
  """
  missing: list[str] = []
  for step in plan:
    program = (step.argv if isinstance(step, Poll) else step)[0]
    for name in (program, *NEEDS.get(program, ())):
      if name not in missing and shutil.which(name) is None:
        missing.append(name)
  if not missing:
    return
  hints = [INSTALL_HINTS.get(name, "install it or add its directory to PATH") for name in missing]
  if len(missing) == 1:
    message = f"{missing[0]} is not on PATH: {hints[0]}"
  else:
    message = f"{', '.join(missing)} are not on PATH. " + "; ".join(
      f"{name}: {hint}" for name, hint in zip(missing, hints)
    )
  raise LaunchError(message + ". --dry-run prints the commands without running them")


def _run_poll(poll: Poll, runner: Callable[..., subprocess.CompletedProcess], log: TextIO) -> None:
  deadline = time.monotonic() + poll.timeout_s
  while True:
    result = runner(list(poll.argv), capture_output=True, text=True)
    if result.returncode != 0:
      raise LaunchError(
        f"command failed with exit status {result.returncode}: "
        f"{shell_line(poll.argv)}\n{result.stderr.strip()}"
      )
    state = result.stdout.strip()
    print(f"  state: {state or '(empty)'}", file=log, flush=True)
    if state == poll.ready:
      return
    if state in poll.failed:
      raise LaunchError(
        f"{shell_line(poll.argv)} answered {state}: the resource will not "
        "become ready; delete it and create it again"
      )
    if time.monotonic() > deadline:
      raise LaunchError(
        f"not {poll.ready} after {poll.timeout_s:.0f} s (last state: {state}): "
        f"{shell_line(poll.argv)}"
      )
    time.sleep(poll.interval_s)


def execute(plan: Sequence[Step], dry_run: bool, out: TextIO | None = None) -> None:
  """Prints (`dry_run`) or runs the plan's steps in order.

  Running: the plan's programs are checked first (`check_programs`), then each command is
  echoed to stderr as `+ LINE` and run with `subprocess.run` (its output goes straight to the
  terminal); the first non-zero exit status raises `LaunchError` naming the command and the
  status, and nothing after it runs.
  """
  out = out or sys.stdout
  if not dry_run:
    check_programs(plan)
  for step in plan:
    argv = step.argv if isinstance(step, Poll) else step
    if dry_run:
      print(shell_line(argv), file=out)
      continue
    print(f"+ {shell_line(argv)}", file=sys.stderr, flush=True)
    if isinstance(step, Poll):
      _run_poll(step, subprocess.run, sys.stderr)
      continue
    status = subprocess.run(list(argv)).returncode
    if status != 0:
      raise LaunchError(f"command failed with exit status {status}: {shell_line(argv)}")


def main_wrapper(
  build: Callable[[argparse.Namespace], None],
  parser: argparse.ArgumentParser,
  argv: Sequence[str] | None,
) -> int:
  """Parses `argv`, calls `build(args)`, and turns a `LaunchError` into one line and status 1."""
  args = parser.parse_args(argv)
  try:
    build(args)
  except LaunchError as e:
    print(f"FATAL {e}", file=sys.stderr)
    return 1
  return 0


def gcloud_location(args: argparse.Namespace) -> list[str]:
  """The --zone/--project flags every gcloud and xpk command here takes."""
  return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def plan_main(
  plan: Callable[[argparse.Namespace], Sequence[Step]],
  parser: argparse.ArgumentParser,
  argv: Sequence[str] | None,
) -> int:
  """Entry point of a script whose work is a plan of steps: print (--dry-run) or run them."""
  return main_wrapper(lambda args: execute(plan(args), args.dry_run), parser, argv)


def step_parser(prog: str, description: str, steps: Sequence[str]) -> argparse.ArgumentParser:
  """A parser taking one or more STEPs and --dry-run (the rest is each script's own)."""
  parser = argparse.ArgumentParser(
    prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "steps", nargs="+", choices=steps, metavar="STEP", help="one or more of: " + ", ".join(steps)
  )
  parser.add_argument(
    "--dry-run",
    "--dry_run",
    dest="dry_run",
    action="store_true",
    help="print the commands, run nothing",
  )
  return parser
