"""The docs' cheap commands run as the docs say: every command-line tool's `--help` prints its
module docstring as written (absl formats a usage text with `%`, which once garbled one), with
no traceback. The tiny run's console, `--compile_only` as written, the launchers' dry runs and
the user-mistake lines are checked in test_resume, test_compile_check, test_launch and
test_user_errors."""

import ast
import concurrent.futures
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _commands() -> list[str]:
  """Every module of the project that runs as `python -m MODULE` (it has a __main__ guard)."""
  found = []
  for package in ("svilm", "data_pipelines", "benchmarks", "launch"):
    for root, _, files in os.walk(os.path.join(REPO_ROOT, package)):
      for name in sorted(files):
        path = os.path.join(root, name)
        if name.endswith(".py") and 'if __name__ == "__main__"' in open(path).read():
          found.append(os.path.relpath(path, REPO_ROOT)[: -len(".py")].replace(os.sep, "."))
  return found


def _help(module: str) -> tuple[str, str]:
  env = dict(os.environ, SVILM_MALLOC_HUGEPAGES="0", TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
    [sys.executable, "-m", module, "--help"],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  return module, result.stdout + result.stderr


def test_every_tool_prints_its_docstring_as_its_help():
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    outputs = dict(pool.map(_help, _commands()))
  assert len(outputs) >= 14, sorted(outputs)
  words = lambda text: " ".join(text.split())
  for module, output in outputs.items():
    path = os.path.join(REPO_ROOT, *module.split(".")) + ".py"
    with open(path) as f:
      doc = ast.get_docstring(ast.parse(f.read()))
    assert "Traceback" not in output, (module, output[-2000:])
    assert words(doc) in words(output), (module, output[:3000])
