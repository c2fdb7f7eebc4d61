r"""Train svilm on a multi-node GPU cluster with SLURM: writes an sbatch script and submits it.

    python -m launch.slurm --dry-run --nodes=2 --gpus_per_node=8 --partition=gpu \
        --venv=/shared/venvs/svilm --config=configs/pretrain.py --workdir=/shared/svilm/run1

One SLURM task per node, each one JAX process that owns all the node's GPUs. The first node of
the allocation hosts JAX's coordinator; every task gets --coordinator_address, --num_processes
and --process_id explicitly (evaluated inside the task, where SLURM_PROCID is that task's rank),
so svilm.main starts jax.distributed the same way whether or not JAX's own SLURM detection
would have. The repository checkout, the venv and the workdir must be on a filesystem every
node mounts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

from launch import common

# Node-local directories: a workdir there would be a different directory on every node.
_NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/scratch/local")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m launch.slurm",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
    "--dry-run",
    "--dry_run",
    dest="dry_run",
    action="store_true",
    help="print the sbatch script and the sbatch command, run nothing",
  )
  parser.add_argument("--nodes", type=int, required=True, help="nodes = JAX processes")
  parser.add_argument("--gpus_per_node", type=int, default=8)
  parser.add_argument(
    "--cpus_per_task",
    type=int,
    default=16,
    help="CPU cores per node for the tf.data input pipeline",
  )
  parser.add_argument("--partition", help="SLURM partition (default: the cluster's)")
  parser.add_argument("--time", default="24:00:00", help="time limit, [D-]HH:MM:SS")
  parser.add_argument("--account", help="SLURM account to charge")
  parser.add_argument("--job_name", default="svilm")
  parser.add_argument(
    "--venv",
    help="virtual environment to activate on every node "
    "(svilm installed with the CUDA build of jax)",
  )
  parser.add_argument(
    "--output",
    default="svilm-%j.out",
    help="job log; %%j is the job id (process 0 prints the metrics)",
  )
  parser.add_argument("--port", type=int, default=12345, help="JAX coordinator port")
  parser.add_argument(
    "--repo",
    default=common.REPO_ROOT,
    help="the checkout the job runs in (config paths are relative to it)",
  )
  parser.add_argument(
    "--script_path",
    help="where to write the sbatch script (default: JOB_NAME.sbatch in the current directory)",
  )
  common.add_training_flags(parser)
  return parser


def check_shared_workdir(workdir: str | None) -> str:
  """The workdir as an absolute path (or gs:// as is); refuses node-local directories."""
  if not workdir:
    raise common.LaunchError("--workdir is required")
  if workdir.startswith("gs://"):
    return workdir
  absolute = os.path.abspath(workdir)
  if any(absolute == d or absolute.startswith(d + "/") for d in _NODE_LOCAL):
    raise common.LaunchError(
      f"--workdir={workdir} is node-local storage. Every node runs the trainer: Orbax "
      "writes each checkpoint from all processes together and every process reads it back "
      "to resume, so the workdir must be on a filesystem all nodes mount (NFS, Lustre, GPFS, "
      "or a gs:// bucket), e.g. --workdir=/shared/$USER/svilm/run1"
    )
  return absolute


def sbatch_script(args: argparse.Namespace) -> str:
  """The full text of the sbatch script for `args`."""
  workdir = check_shared_workdir(args.workdir)
  lines = [
    "#!/bin/bash",
    f"#SBATCH --job-name={args.job_name}",
    f"#SBATCH --nodes={args.nodes}",
    "#SBATCH --ntasks-per-node=1",
    f"#SBATCH --gpus-per-node={args.gpus_per_node}",
    f"#SBATCH --cpus-per-task={args.cpus_per_task}",
    f"#SBATCH --time={args.time}",
    f"#SBATCH --output={args.output}",
  ]
  if args.partition:
    lines.append(f"#SBATCH --partition={args.partition}")
  if args.account:
    lines.append(f"#SBATCH --account={args.account}")
  lines += ["", "set -euo pipefail", f"cd {shlex.quote(os.path.abspath(args.repo))}"]
  if args.venv:
    lines.append(f"source {shlex.quote(os.path.join(args.venv, 'bin', 'activate'))}")
  train = common.training_command(args.config, workdir, args.override)
  # $SLURM_PROCID differs per task, so it must be expanded inside each task's shell, not here
  # in the batch script (where it is always 0): hence `bash -c '...'` with escaped variables.
  task = (
    common.shell_line(train) + ' --coordinator_address="$COORDINATOR_ADDRESS"'
    ' --num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"'
  )
  lines += [
    "# Process 0 (the coordinator) runs on the allocation's first node.",
    'export COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
    f':{args.port}"',
    # --kill-on-bad-exit: one failed process ends the job instead of leaving the others
    # blocked in a collective until the time limit.
    f"srun --kill-on-bad-exit=1 bash -c {shlex.quote('exec ' + task)}",
  ]
  return "\n".join(lines) + "\n"


def _submit(args: argparse.Namespace) -> None:
  script = sbatch_script(args)
  path = os.path.abspath(args.script_path or f"{args.job_name}.sbatch")
  submit = ["sbatch", path]
  if args.dry_run:
    print(script, end="")
    common.execute([submit], dry_run=True)
    return
  common.check_programs([submit])  # before the script is written: no sbatch, no leftovers
  with open(path, "w") as f:
    f.write(script)
  print(f"wrote {path}", file=sys.stderr)
  common.execute([submit], dry_run=False)


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  return common.main_wrapper(_submit, build_parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
