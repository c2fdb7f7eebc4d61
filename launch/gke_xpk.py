r"""Train svilm on a GKE cluster through xpk (https://github.com/AI-Hypercomputer/xpk).

    python -m launch.gke_xpk run --dry-run --cluster=my-cluster --workload=svilm-run1 \
        --tpu_type=v5litepod-16 --num_slices=1 --zone=us-west4-a --project=my-proj \
        --base_docker_image=python:3.11 \
        --config=configs/pretrain.py --workdir=gs://my-bucket/svilm/run1

Steps (one or several, in order):
  run      xpk workload create: one pod per TPU VM host (or GPU node) of each slice, all
           running the training command
  logs     xpk workload list, cluster credentials for kubectl, then follow the log of process 0
           (slice 0, pod 0), which prints the metrics
  delete   xpk workload delete

The cluster itself is made once with `xpk cluster create` (docs/launch.md). The xpk flag names
used here are those of xpk's README as of 2025 (`pip install xpk`); xpk changes quickly, so
compare with `xpk workload create --help` if a flag is refused. On TPU slices GKE sets the
variables JAX's cluster detection reads (TPU_WORKER_HOSTNAMES, and MEGASCALE_COORDINATOR_ADDRESS
for several slices), so no coordinator flags are passed; GPU nodes (--device_type) are not
covered by that detection and are untested.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from launch import common

STEPS = ("run", "logs", "delete")


def build_parser() -> argparse.ArgumentParser:
  parser = common.step_parser("python -m launch.gke_xpk", __doc__, STEPS)
  parser.add_argument("--cluster", required=True, help="the xpk cluster's name")
  parser.add_argument(
    "--workload", required=True, help="workload name (lower case letters, digits and '-', unique)"
  )
  parser.add_argument("--zone", required=True, help="the cluster's zone, e.g. us-west4-a")
  parser.add_argument("--project", help="GCP project (default: gcloud's configured one)")
  accelerator = parser.add_mutually_exclusive_group()
  accelerator.add_argument("--tpu_type", help="TPU slice type, e.g. v5litepod-16")
  accelerator.add_argument("--device_type", help="GPU/CPU node type, e.g. h100-80gb-8")
  parser.add_argument(
    "--num_slices", type=int, default=1, help="TPU slices (data parallel across slices over DCN)"
  )
  image = parser.add_mutually_exclusive_group()
  image.add_argument(
    "--docker_image",
    help="an image with svilm installed and the "
    "checkout as its working directory (docs/launch.md has a Dockerfile)",
  )
  image.add_argument(
    "--base_docker_image",
    help="xpk builds an image from this base plus "
    "this checkout, and the workload pip-installs it at start",
  )
  common.add_training_flags(parser)
  return parser


def _run(args: argparse.Namespace) -> list[str]:
  """`xpk workload create ...` with the training command as --command."""
  if not (args.tpu_type or args.device_type):
    raise common.LaunchError("run needs --tpu_type (TPU slices) or --device_type (GPU nodes)")
  if not (args.docker_image or args.base_docker_image):
    raise common.LaunchError(
      "run needs --docker_image (svilm installed) or --base_docker_image (xpk adds this checkout)"
    )
  common.check_gcs_workdir(args.workdir, "GKE")
  train = common.shell_line(common.training_command(args.config, args.workdir, args.override))
  accelerator = (
    [f"--tpu-type={args.tpu_type}"] if args.tpu_type else [f"--device-type={args.device_type}"]
  )
  if args.docker_image:
    image, command = [f"--docker-image={args.docker_image}"], train
  else:
    # The base image has Python but not svilm: install the copied checkout at pod start
    # (setup.py pins jax; the extra adds the accelerator's plugin).
    jax_extra = "jax[tpu]" if args.tpu_type else "jax[cuda12]"
    image = [f"--base-docker-image={args.base_docker_image}", f"--script-dir={common.REPO_ROOT}"]
    command = f"pip install -e . {shlex.quote(jax_extra)} && {train}"
  return (
    ["xpk", "workload", "create", f"--cluster={args.cluster}", f"--workload={args.workload}"]
    + accelerator
    + [f"--num-slices={args.num_slices}"]
    + image
    + common.gcloud_location(args)
    + [f"--command={command}"]
  )


def plan(args: argparse.Namespace) -> list[common.Step]:
  """The commands for `args.steps`, in order (raises LaunchError on bad flags)."""
  commands: list[common.Step] = []
  for step in args.steps:
    if step == "run":
      commands.append(_run(args))
    elif step == "logs":
      # xpk clusters are regional: the region is the zone without its last letter part.
      region = args.zone.rsplit("-", 1)[0]
      project = [f"--project={args.project}"] if args.project else []
      commands.append(
        ["xpk", "workload", "list", f"--cluster={args.cluster}"] + common.gcloud_location(args)
      )
      commands.append(
        ["gcloud", "container", "clusters", "get-credentials", args.cluster, f"--region={region}"]
        + project
      )
      # JobSet labels each pod with its slice (job-index) and Job its host (completion index).
      commands.append(
        [
          "kubectl",
          "logs",
          "--follow",
          "--selector="
          f"jobset.sigs.k8s.io/jobset-name={args.workload},"
          "jobset.sigs.k8s.io/job-index=0,"
          "batch.kubernetes.io/job-completion-index=0",
        ]
      )
    elif step == "delete":
      commands.append(
        ["xpk", "workload", "delete", f"--cluster={args.cluster}", f"--workload={args.workload}"]
        + common.gcloud_location(args)
      )
  return commands


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  return common.plan_main(plan, build_parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
