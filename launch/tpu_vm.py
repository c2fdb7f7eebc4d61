r"""Train svilm on a Cloud TPU VM slice, created as a queued resource.

    python -m launch.tpu_vm all --dry-run --name=svilm-v5e --zone=us-west4-a \
        --accelerator_type=v5litepod-16 --spot \
        --config=configs/pretrain.py --workdir=gs://my-bucket/svilm/run1

Steps (give one or several, in order; `all` is create, wait, install, run):
  create   gcloud compute tpus queued-resources create (the TPU VM is the node NAME)
  wait     poll queued-resources describe until the state is ACTIVE
  install  put the code on every worker (copy this checkout, or git clone --repo), make a
           Python 3.11 environment ~/svilm-venv with uv, and install the code into it with
           jax[tpu]
  run      start the training command with that environment's python on every worker in the
           background (nohup), logging to ~/svilm_train.log on each
  logs     follow worker 0's log (process 0 prints the metrics)
  delete   delete the queued resource and its TPU VM

Every worker of the slice runs the same command; JAX finds the other workers itself on TPU VMs,
so no coordinator flags are passed. The workdir must be gs:// (see common.check_gcs_workdir).
The environment does not use the image's python3 (3.10 on the Ubuntu 22.04 TPU images, while
the pinned jax needs 3.11): uv downloads its own CPython 3.11, so any image with curl will do.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import Sequence

from launch import common

STEPS = ("create", "wait", "install", "run", "logs", "delete", "all")
ALL_STEPS = ("create", "wait", "install", "run")

# Default TPU VM software per accelerator generation (Cloud TPU docs, "TPU software
# versions"); anything else needs --runtime_version.
RUNTIME_VERSIONS = {
  "v4": "tpu-ubuntu2204-base",
  "v5litepod": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
REMOTE_DIR = "svilm"  # the code's directory under each worker's home
# The Python environment on each worker, made by `install` and used by `run`. uv makes it with
# a CPython it downloads (uv's managed Pythons), whatever python3 the image has.
PYTHON_VERSION = "3.11"
VENV = "~/svilm-venv"
VENV_PYTHON = f"{VENV}/bin/python"
UV_INSTALLER = "https://astral.sh/uv/install.sh"
UV = "~/.local/bin/uv"  # where that installer puts uv; not on PATH in a non-login ssh
LOG_FILE = "~/svilm_train.log"
# A --repo that is cloned rather than copied: URL schemes and scp-like `user@host:path`.
_GIT_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")


def build_parser() -> argparse.ArgumentParser:
  parser = common.step_parser("python -m launch.tpu_vm", __doc__, STEPS)
  parser.add_argument("--name", required=True, help="queued resource and TPU VM name")
  parser.add_argument("--zone", required=True, help="e.g. us-west4-a")
  parser.add_argument("--project", help="GCP project (default: gcloud's configured one)")
  parser.add_argument("--accelerator_type", help="e.g. v5litepod-16, v4-32, v5p-64")
  parser.add_argument(
    "--runtime_version",
    help="TPU VM image (default by generation: "
    + ", ".join(f"{k}: {v}" for k, v in RUNTIME_VERSIONS.items())
    + ")",
  )
  capacity = parser.add_mutually_exclusive_group()
  capacity.add_argument("--spot", action="store_true", help="spot capacity (preemptible)")
  capacity.add_argument("--reserved", action="store_true", help="the project's reservation")
  parser.add_argument(
    "--repo",
    default=common.REPO_ROOT,
    help="git URL to clone on the workers, or local directory to copy (default: this checkout)",
  )
  parser.add_argument(
    "--wait_timeout_s",
    type=float,
    default=7200.0,
    help="give up waiting for ACTIVE after this long",
  )
  common.add_training_flags(parser)
  return parser


def _runtime_version(args: argparse.Namespace) -> str:
  if args.runtime_version:
    return args.runtime_version
  generation = args.accelerator_type.rsplit("-", 1)[0]
  if generation not in RUNTIME_VERSIONS:
    raise common.LaunchError(
      f"no default --runtime_version for {args.accelerator_type}; "
      "pass one (see Cloud TPU's 'TPU software versions' page)"
    )
  return RUNTIME_VERSIONS[generation]


def _ssh(args: argparse.Namespace, worker: str, command: str) -> list[str]:
  return (
    ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name]
    + common.gcloud_location(args)
    + [f"--worker={worker}", f"--command={command}"]
  )


def _install(args: argparse.Namespace) -> list[list[str]]:
  """Fresh code and a fresh Python 3.11 environment on every worker; the code (`-e .`) and the
  TPU build of jax are installed into that environment.

  The old copy is removed first so that a rerun never mixes two versions of the code (scp
  into an existing directory would nest the new copy inside it); `uv venv --clear` does the
  same for the environment.
  """
  if _GIT_URL.match(args.repo):
    fetch = [
      _ssh(
        args, "all", f"rm -rf ~/{REMOTE_DIR} && git clone {shlex.quote(args.repo)} ~/{REMOTE_DIR}"
      )
    ]
  else:
    local = os.path.abspath(args.repo)
    if not os.path.isdir(local):
      raise common.LaunchError(f"--repo={args.repo} is neither a git URL nor a directory")
    fetch = [
      _ssh(args, "all", f"rm -rf ~/{REMOTE_DIR}"),
      [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        "--recurse",
        local,
        f"{args.name}:{REMOTE_DIR}",
      ]
      + common.gcloud_location(args)
      + ["--worker=all"],
    ]
  venv = f"curl -LsSf {UV_INSTALLER} | sh && {UV} venv --clear --python {PYTHON_VERSION} {VENV}"
  # setup.py pins jax; the `tpu` extra adds the matching libtpu.
  pip = f"cd ~/{REMOTE_DIR} && {UV} pip install --python {VENV_PYTHON} -e . 'jax[tpu]'"
  return fetch + [_ssh(args, "all", venv), _ssh(args, "all", pip)]


def plan(args: argparse.Namespace) -> list[common.Step]:
  """The commands for `args.steps`, in order (raises LaunchError on bad flags)."""
  steps = [s for step in args.steps for s in (ALL_STEPS if step == "all" else (step,))]
  queued = ["gcloud", "compute", "tpus", "queued-resources"]
  commands: list[common.Step] = []
  for step in steps:
    if step == "create":
      if not args.accelerator_type:
        raise common.LaunchError("create needs --accelerator_type (e.g. v5litepod-16)")
      capacity = ["--spot"] if args.spot else ["--reserved"] if args.reserved else []
      commands.append(
        queued
        + ["create", args.name, f"--node-id={args.name}"]
        + common.gcloud_location(args)
        + [
          f"--accelerator-type={args.accelerator_type}",
          f"--runtime-version={_runtime_version(args)}",
        ]
        + capacity
      )
    elif step == "wait":
      commands.append(
        common.Poll(
          tuple(
            queued
            + ["describe", args.name]
            + common.gcloud_location(args)
            + ["--format=value(state.state)"]
          ),
          ready="ACTIVE",
          failed=("FAILED", "SUSPENDED"),
          timeout_s=args.wait_timeout_s,
        )
      )
    elif step == "install":
      commands.extend(_install(args))
    elif step == "run":
      common.check_gcs_workdir(args.workdir, "a multi-host TPU slice")
      # The interpreter is written out unquoted (shlex would quote the `~`, which the
      # worker's shell must expand); the rest of the command is quoted as usual.
      argv = common.training_command(args.config, args.workdir, args.override)
      train = f"{VENV_PYTHON} {common.shell_line(argv[1:])}"
      # nohup and closed stdin/stdout let ssh return while training goes on; each worker
      # logs to its own home directory.
      commands.append(
        _ssh(args, "all", f"cd ~/{REMOTE_DIR} && nohup {train} > {LOG_FILE} 2>&1 < /dev/null &")
      )
    elif step == "logs":
      commands.append(_ssh(args, "0", f"tail -f {LOG_FILE}"))
    elif step == "delete":
      commands.append(
        queued + ["delete", args.name] + common.gcloud_location(args) + ["--force", "--quiet"]
      )
  return commands


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  return common.plan_main(plan, build_parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
