"""benchmarks/vs_pytorch.py runs end to end, and says how to get torch when it is missing.

torch is not a test dependency and this file never imports it: the benchmark runs in a
subprocess. Where torch is installed (`pip install -e ".[pytorch_reference]"`) the tiny config
is benchmarked for real, including the check that the PyTorch reference computes the same
function as our encoder; without torch the script must fail fast with the install hint.
"""

import importlib.util
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.conftest import devices_env

SCRIPT = "benchmarks/vs_pytorch.py"
TINY_ARGS = [
  "--config=configs/pretrain.py:tiny",
  "--steps=2",
  "--rounds=2",
  "--warmup=1",
  "--batch_size=4",
]
INSTALL_HINT = 'pip install -e ".[pytorch_reference]"'


def _run(argv: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(
    argv, cwd=REPO_ROOT, env=devices_env(1), capture_output=True, text=True, timeout=300
  )


def _assert_install_hint(result: subprocess.CompletedProcess) -> None:
  assert result.returncode != 0
  assert INSTALL_HINT in result.stderr, result.stderr[-2000:]


def test_without_torch_exits_with_install_hint():
  # sys.modules[name] = None makes `import torch` raise ImportError even where it is installed.
  code = (
    "import runpy, sys; sys.modules['torch'] = None; "
    f"sys.argv = {[SCRIPT] + TINY_ARGS!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')"
  )
  _assert_install_hint(_run([sys.executable, "-c", code]))


def test_tiny_benchmark_reports_both_sides():
  result = _run([sys.executable, SCRIPT] + TINY_ARGS)
  if importlib.util.find_spec("torch") is None:
    _assert_install_hint(result)
    return
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert (figures["batch"], figures["frames"], figures["resolution"]) == (4, 8, 64)
  assert figures["jax_devices"] == 1
  # The reference is the same function: outputs and gradients agree to float32 noise.
  assert figures["check_max_rel_diff"] < 1e-3
  assert figures["max_abs_diff"] < 1e-3
  for side in ("ours", "pytorch"):
    assert 0 < figures[f"{side}_step_ms_min"] <= figures[f"{side}_step_ms"]
    assert figures[f"{side}_step_ms"] <= figures[f"{side}_step_ms_max"]
    assert 0 < figures[f"{side}_cpu_util"] <= 1.05  # per-core share; a little timer slack
  assert abs(figures["ratio"] - figures["ours_step_ms"] / figures["pytorch_step_ms"]) < 1e-2
  # Hand count of the tiny step (batch 4, 64 tokens of width 128, 2 blocks, MLP 512, 2
  # grouping blocks, 8 groups), forward matmul FLOPs = 2 * multiply-adds:
  #   tubelet conv 256 tokens * 2*1536*128                         = 100.7 M
  #   blocks 2 * 256 * (4 * 2*128^2 + 2 * 2*128*512 + 2 * 2*64*128) = 218.1 M
  #   grouping k, v: 2 * 256 * 2 * 2*128^2                        =  33.6 M (rest < 3 M)
  # ~355 M forward; the backward is about twice that, minus the conv's unused input gradient
  # (100.7 M): ~965 M, plus elementwise work (softmax, LayerNorm, GELU, AdamW).
  assert 0.9e9 < figures["flops_per_step"] < 1.3e9
