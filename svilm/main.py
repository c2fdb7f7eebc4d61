r"""The svilm entry point: `python -m svilm.main --config=configs/pretrain.py --workdir=DIR`.

The config is an ml_collections config file, locked at load time: `--config.some.key=value`
overrides an existing key, and a key that does not exist is an error that names it. The task
(pretraining, retrieval, ...) is `config.task`, a name in the registry of svilm/tasks/; every
task runs in the one generic trainer (svilm/trainers/trainer.py). Rerunning the same command in
the same workdir resumes from the newest checkpoint there.
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file, optionally with ':ARG'.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Directory for checkpoints, metrics and eval_results.json; rerunning in it resumes.",
)
_COMPILE_ONLY = flags.DEFINE_bool(
  "compile_only",
  False,
  "Compile the train step for the configured mesh, print per-device "
  "memory and FLOPs per step, and exit without reading data or training.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0 for a multi-process run where JAX "
  "cannot detect the cluster itself (TPU VMs, SLURM and GKE are detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_VERBOSE = flags.DEFINE_bool(
  "verbose",
  False,
  "On a user mistake (a bad config value or path, a diverged run), show the traceback "
  "after the FATAL line; for bug reports.",
)
flags.mark_flags_as_required(["config"])

# Environment variables that say a multi-process cluster launched us, so that
# jax.distributed.initialize() can discover everything by itself.
_CLUSTER_ENV = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_NTASKS")


def _on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM (queued resources set no TPU_WORKER_HOSTNAMES in an ssh shell).

  Uses JAX's own detector, the one `jax.distributed.initialize()` relies on; it is private
  API, so a JAX that moves it simply falls back to the environment variables above.
  """
  try:
    from jax._src.clusters import cloud_tpu_cluster

    return bool(
      cloud_tpu_cluster.running_in_cloud_tpu_vm and cloud_tpu_cluster.GceTpuCluster.is_env_present()
    )
  except (ImportError, AttributeError):
    return False


def initialize_distributed() -> None:
  """Starts JAX's multi-controller runtime when the run spans several processes.

  Explicit flags win; otherwise JAX's own cluster detection is used when a TPU pod, GKE
  (xpk/JobSet) or a multi-task SLURM job launched us; a plain single process does nothing.
  """
  import os

  import jax

  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
    return
  env = {k: os.environ.get(k, "") for k in _CLUSTER_ENV}
  multi_host_tpu = "," in env["TPU_WORKER_HOSTNAMES"] or _on_cloud_tpu_vm()
  multi_task_slurm = env["SLURM_NTASKS"] not in ("", "1")
  if multi_host_tpu or env["MEGASCALE_COORDINATOR_ADDRESS"] or multi_task_slurm:
    jax.distributed.initialize()


def _config_flag(argv: list[str]) -> str | None:
  """The value of --config in argv (either `--config=V` or `--config V`), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _check_config_file(value: str) -> None:
  """Loads the --config file and calls its get_config(ARG) before absl does (and before JAX
  and TensorFlow load), so that a missing file or a bad variant is one FATAL line."""
  path, _, arg = value.partition(":")
  if not os.path.isfile(path):
    sys.exit(
      f"FATAL --config={value}: there is no config file {path!r} (relative to {os.getcwd()}); "
      "the shipped configs are configs/*.py"
    )
  spec = importlib.util.spec_from_file_location("_svilm_config_check", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    module.get_config(arg) if arg else module.get_config()
  except ValueError as e:  # get_config(arg) rejects bad arguments, naming them
    sys.exit(f"FATAL --config={value}: {e}")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with a one-line message for config mistakes instead of a traceback."""
  config = _config_flag(argv)
  if config is not None:
    _check_config_file(config)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}\nPass --help to see help on flags.")
  except (KeyError, AttributeError) as e:
    # ml_collections raises these for `--config.<key>` when <key> is not in the locked config;
    # its message (with a "Did you mean" hint) is the exception's argument, not its repr.
    bad = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    message = e
    while isinstance(message, BaseException) and message.args:  # KeyErrors nest KeyErrors
      message = message.args[0]
    message = "; ".join(line.strip() for line in str(message).splitlines())
    sys.exit(
      f"FATAL Unknown config key in {' '.join(bad)}: {message} (keys are locked; check the "
      "spelling against the config file)"
    )
  except ValueError as e:
    sys.exit(f"FATAL Invalid config: {e}")


def main(argv: list[str]) -> None:
  """Runs the job; a user mistake ends it with one FATAL line (--verbose adds the traceback)."""
  try:
    _main(argv)
  except Exception as e:
    from svilm import configuration
    from svilm.trainers import train_step

    # What was asked for cannot work (a config value, a path) or the run diverged: the
    # message names it and says what to do. Anything else is a bug and keeps its traceback.
    if _VERBOSE.value or not isinstance(
      e, (configuration.ConfigError, train_step.NonFiniteLossError)
    ):
      raise
    sys.exit(f"FATAL {e}")


def _main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TensorFlow's C++ INFO lines (CPU feature and oneDNN notices) say nothing a user acts on.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  # Imported here so `--help` and flag errors answer without loading JAX and TensorFlow.
  initialize_distributed()  # before anything asks JAX about devices
  import jax
  import tensorflow as tf

  # tf.data runs on the host only; keep TensorFlow away from any accelerator JAX will use.
  tf.config.set_visible_devices([], "GPU")
  # Orbax logs every save step at INFO, and JAX logs its probe of each absent backend ("Unable
  # to initialize backend 'tpu'") at INFO; keep their warnings, drop the chatter.
  logging.get_absl_handler().addFilter(
    lambda record: (
      record.levelno >= std_logging.WARNING
      or ("/orbax/" not in record.pathname and not record.pathname.endswith("xla_bridge.py"))
    )
  )
  config = _CONFIG.value
  from svilm import tasks

  if config.task not in tasks.names():
    raise app.UsageError(
      f"config.task={config.task!r} is not a registered task; known tasks: "
      f"{', '.join(tasks.names())}"
    )
  if _COMPILE_ONLY.value:
    from svilm import compile_check

    print(compile_check.format_report(compile_check.compile_train_step(config)), flush=True)
    return
  if not _WORKDIR.value:
    raise app.UsageError(
      "--workdir is required (checkpoints, metrics and eval_results.json "
      "go there; rerunning in it resumes)"
    )
  if tf.io.gfile.exists(_WORKDIR.value) and not tf.io.gfile.isdir(_WORKDIR.value):
    sys.exit(
      f"FATAL --workdir={_WORKDIR.value} is a file; the workdir must be a directory (it is "
      "created if missing; rerunning in it resumes)"
    )
  logging.info(
    "JAX %s on %d %s device(s), process %d of %d",
    jax.__version__,
    jax.device_count(),
    jax.default_backend(),
    jax.process_index(),
    jax.process_count(),
  )
  from svilm.evaluators import summary
  from svilm.trainers import trainer

  results = trainer.train_and_evaluate(config, _WORKDIR.value)
  if jax.process_index() == 0 and not results.get("preempted"):
    from svilm import paths

    path = os.path.join(paths.resolve(_WORKDIR.value), "eval_results.json")
    print(summary.format_table(results, path), flush=True)


def run() -> None:
  from svilm import host_memory

  host_memory.ensure_malloc_hugepages()  # re-executes once; see svilm/host_memory.py
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
