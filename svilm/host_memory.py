"""Huge pages for host malloc: what an XLA:CPU train step needs to run at full speed.

XLA:CPU allocates a program's temporaries afresh for every execution (159 MiB for the default
config's video-encoder step). glibc serves allocations that large with a new mmap, so the
kernel maps and zero-fills them 4 KiB page by page on first touch: 54,600 minor page faults in
every default-config train step on the project's 2-core CPU box. With glibc's transparent huge
page tunable (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, glibc >= 2.35, kernel THP in 'madvise'
or 'always' mode) malloc asks for 2 MiB pages instead: 640 faults per step, and the step took
127 ms instead of 174 ms (docs/benchmarks.md has the commands). PyTorch's step, in the same
process, did not change with it.

glibc reads tunables only when a process starts, so `ensure_malloc_hugepages` re-executes the
interpreter once, with the same arguments, when the tunable is missing. The entry points call
it first thing (`svilm.main`, the benchmarks); library code never does. Set
SVILM_MALLOC_HUGEPAGES=0 to keep glibc's default, or set GLIBC_TUNABLES yourself (any
`glibc.malloc.hugetlb` value given there is respected).
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE_NAME = "glibc.malloc.hugetlb"
TUNABLE = f"{TUNABLE_NAME}=1"
OPT_OUT_ENV = "SVILM_MALLOC_HUGEPAGES"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
_MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb


def tunables_with_hugepages(current: str | None) -> str | None:
  """GLIBC_TUNABLES with huge-page malloc added, or None when `current` already sets it.

  Tunables are colon-separated `name=value` pairs; the user's own pairs are kept in front.
  """
  pairs = [p for p in (current or "").split(":") if p]
  if any(p.split("=", 1)[0] == TUNABLE_NAME for p in pairs):
    return None
  return ":".join(pairs + [TUNABLE])


def _glibc_version() -> tuple[int, ...] | None:
  libc, version = platform.libc_ver()
  if libc != "glibc" or not version:
    return None
  return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _kernel_thp_usable() -> bool:
  """True when the kernel's transparent huge pages are in 'always' or 'madvise' mode."""
  try:
    with open(_THP_SETTING) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def hugepages_applicable() -> bool:
  """Whether the tunable can take effect here: Linux, glibc >= 2.35, kernel THP not 'never'."""
  version = _glibc_version()
  return (
    sys.platform.startswith("linux")
    and version is not None
    and version >= _MIN_GLIBC
    and _kernel_thp_usable()
  )


def ensure_malloc_hugepages() -> None:
  """Re-executes this process with huge-page malloc unless it has it, cannot, or opted out.

  Call it before anything else in a `__main__` block: the process is replaced (same PID,
  environment plus the tunable, same command line), so work done before it is repeated.
  """
  if os.environ.get(OPT_OUT_ENV) == "0" or not hugepages_applicable():
    return
  tunables = tunables_with_hugepages(os.environ.get("GLIBC_TUNABLES"))
  if tunables is None:
    return
  os.environ["GLIBC_TUNABLES"] = tunables
  print(
    f"svilm: restarting with GLIBC_TUNABLES={tunables} for huge-page malloc "
    f"(svilm/host_memory.py; {OPT_OUT_ENV}=0 turns this off)",
    file=sys.stderr,
  )
  sys.stdout.flush()
  sys.stderr.flush()
  # orig_argv is the interpreter's own command line (`python -m svilm.main ...`, `python -c`),
  # so the re-run starts exactly as this one did.
  os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])
