"""One formatter and one linter for the whole tree: ruff, configured in pyproject.toml.

Fix a failure with `ruff format . && ruff check --fix .` from the repository root.
"""

import subprocess
import sys

from tests.conftest import REPO_ROOT


def _ruff(*args):
  return subprocess.run(
    [sys.executable, "-m", "ruff", *args],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_the_tree_is_formatted():
  result = _ruff("format", "--check", ".")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_linter_finds_nothing():
  result = _ruff("check", ".")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
