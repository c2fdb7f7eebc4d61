"""Test setup: 8 fake CPU devices (for the mesh tests) and one tiny ShapesWorld per session."""

import os
import re
import subprocess
import sys

# Must happen before JAX initialises its backends; every test process sees 8 CPU devices, and
# single-device runs build their mesh from jax.devices()[:1].
# The tests run XLA:CPU's cheapest code generation: they are compile-bound (a tiny step takes
# ~15 s to compile and milliseconds to run). LLVM at -O0 compiles about a third faster, and
# XLA:CPU's older loop emitters (use_fusion_emitters=false) about a fifth faster again (the
# tiny 8-device step: median 7.6 s against 9.7 s, 3 interleaved runs each).
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_force_host_platform_device_count=8"
  + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  + " --xla_cpu_use_fusion_emitters=false"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No persistent compilation cache for this process: with jax 0.10.2, an 8-device XLA:CPU
# executable loaded from it hangs in its first all-gather (the devices reach different
# collective op ids) and aborts after 40 s. Subprocess runs that need one device only share a
# cache instead (`one_device_env`).

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The slowest test modules, slowest first (measured with --durations on the 2-core box). Under
# pytest-xdist the modules are handed to the workers in collection order (pyproject.toml), so
# starting with the longest lets both workers finish together; a module not listed runs after
# these, in name order. A stale list costs only balance, never a result.
SLOWEST_MODULES = (
  "test_sharding",
  "test_tasks",
  "test_benchmarks",
  "test_multiprocess",
  "test_compile_check",
  "test_resume",
  "test_corrupt_checkpoint",
  "test_action_readers",
  "test_qa_readers",
  "test_extract_features",
  "test_temporal_localization_task",
  "test_cost_growth",
  "test_model_scaling",
  "test_train",
  "test_real_video_pretraining",
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: keeps test order


def tiny_config(shapesworld_dir: str):
  """configs/pretrain.py:tiny with its ShapesWorld cache under `shapesworld_dir`."""
  from configs import pretrain

  config = pretrain.get_config("tiny")
  config.data.shapesworld_dir = shapesworld_dir
  return config


@pytest.fixture(scope="session")
def shapesworld_cache(tmp_path_factory) -> str:
  """A ShapesWorld cache directory holding the tiny config's dataset (built once)."""
  from svilm import data_setup

  cache = str(tmp_path_factory.mktemp("shapesworld_cache"))
  data_setup.prepare(tiny_config(cache))
  return cache


@pytest.fixture
def tiny(shapesworld_cache):
  """A fresh (unlocked) tiny pretraining config pointing at the session's ShapesWorld."""
  return tiny_config(shapesworld_cache)


def devices_env(num_devices: int) -> dict:
  """The environment for a subprocess that sees `num_devices` fake CPU devices and otherwise
  runs as this session does (the XLA flags above included)."""
  xla = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ["XLA_FLAGS"])
  flag = f"--xla_force_host_platform_device_count={num_devices}"
  return {**os.environ, "XLA_FLAGS": f"{xla} {flag}".strip()}


@pytest.fixture(scope="session")
def one_device_env(tmp_path_factory) -> dict:
  """The environment for a subprocess that runs on one CPU device and shares this session's
  persistent compilation cache with the other such runs: a program that one of them compiled
  (the same config's train step, say) is loaded, not compiled again. One device only: an
  executable with collectives loaded from the cache hangs (see the top of this file)."""
  return {
    **devices_env(1),
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_compilation_cache")),
  }


def prepare_and_setup(config, devices=None, process_count=1):
  """The test form of the trainer's start-up: data (ShapesWorld or shards) and tokenizer,
  then `trainer.setup` on `devices` (default: all 8 fake devices).

  Returns (ctx, sources, tokenizer): ctx.config is the finalized config.
  """
  from data_pipelines import tokenizer as tokenizer_lib
  from svilm import data_setup
  from svilm.trainers import trainer

  sources = data_setup.prepare(config)
  tokenizer = tokenizer_lib.Tokenizer(sources.tokenizer_path)
  ctx = trainer.setup(
    config, vocab_size=tokenizer.vocab_size, devices=devices, process_count=process_count
  )
  return ctx, sources, tokenizer


@pytest.fixture
def setup():
  """`prepare_and_setup` as a fixture: setup(config, devices=None) -> (ctx, sources, tokenizer)."""
  return prepare_and_setup


def run_tool(command: list[str]) -> subprocess.CompletedProcess:
  """Runs a command-line tool's argv from the repository root, as a user would, with
  TensorFlow's C++ log lines silenced; returns the CompletedProcess (text stdout, stderr)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def main_command(*flags: str) -> list[str]:
  """The argv of `python -m svilm.main FLAGS...` with this interpreter."""
  return [sys.executable, "-m", "svilm.main", *flags]


def run_main(*flags: str, env: dict | None = None, timeout: int = 600):
  """Runs `python -m svilm.main FLAGS...` from the repository root, as a user would; returns
  the CompletedProcess (text stdout and stderr)."""
  return subprocess.run(
    main_command(*flags), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )


@pytest.fixture(name="run_main")
def run_main_fixture():
  """`run_main` as a fixture: run_main(*flags, env=None, timeout=600) -> CompletedProcess."""
  return run_main
