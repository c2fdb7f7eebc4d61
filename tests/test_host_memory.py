"""Huge-page malloc: the tunable string, and the one-time re-execution of entry points."""

import os
import subprocess
import sys

import pytest

from svilm import host_memory
from tests.conftest import REPO_ROOT


def test_tunables_are_added_to_the_users_own():
  assert host_memory.tunables_with_hugepages(None) == "glibc.malloc.hugetlb=1"
  assert host_memory.tunables_with_hugepages("") == "glibc.malloc.hugetlb=1"
  assert (
    host_memory.tunables_with_hugepages("glibc.malloc.arena_max=2")
    == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  )
  # A hugetlb value the user chose, any value, is left alone.
  assert host_memory.tunables_with_hugepages("glibc.malloc.hugetlb=0") is None
  assert host_memory.tunables_with_hugepages("a.b=1:glibc.malloc.hugetlb=2") is None


_PROBE = (
  "import os, sys; from svilm import host_memory; print('start', sys.argv[1:], flush=True); "
  "host_memory.ensure_malloc_hugepages(); print('tunables', os.environ.get('GLIBC_TUNABLES'))"
)


def _probe(env_updates: dict) -> tuple[list[str], str]:
  env = {
    k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT_ENV)
  }
  env.update(env_updates)
  result = subprocess.run(
    [sys.executable, "-c", _PROBE, "arg1", "--flag=2"],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip().splitlines(), result.stderr


@pytest.mark.skipif(
  not host_memory.hugepages_applicable(),
  reason="needs Linux, glibc >= 2.35 and kernel THP not 'never'",
)
def test_entry_point_reexecutes_once_with_the_same_arguments():
  lines, stderr = _probe({})
  # Ran twice (before and after the exec), with the same arguments, then went on with the
  # tunable set: no second exec. It says so once, on stderr.
  assert lines == [
    "start ['arg1', '--flag=2']",
    "start ['arg1', '--flag=2']",
    "tunables glibc.malloc.hugetlb=1",
  ]
  assert stderr.count("restarting with GLIBC_TUNABLES=glibc.malloc.hugetlb=1") == 1


def test_opt_out_and_user_choice_do_not_reexecute():
  assert _probe({host_memory.OPT_OUT_ENV: "0"}) == (
    ["start ['arg1', '--flag=2']", "tunables None"],
    "",
  )
  assert _probe({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == (
    ["start ['arg1', '--flag=2']", "tunables glibc.malloc.hugetlb=0"],
    "",
  )
