"""A user's mistake ends `python -m svilm.main` with one FATAL line that names it, no traceback.

Each case is run as a user would run it. The first three fail before JAX and TensorFlow load.
"""

import pytest

from tests.conftest import devices_env
from tests.conftest import run_main

TINY = "--config=configs/pretrain.py:tiny"

CASES = {
  "config_path_typo": (
    ["--config=configs/pretrian.py"],
    "there is no config file 'configs/pretrian.py'",
  ),
  "unknown_variant": (["--config=configs/pretrain.py:tine"], "Unknown variant(s) ['tine']"),
  "misspelt_key": (
    [TINY, "--config.total_step=10"],
    'Did you mean "total_steps" instead of "total_step"?',
  ),
  "workdir_is_a_file": ([TINY], "is a file; the workdir must be a directory"),
  "missing_data_path": ([TINY, "--config.data.path=/no/such/dir"], "/no/such/dir does not exist"),
  "batch_not_divisible": (
    [TINY],  # on 3 devices: the tiny batch of 8 cannot be split 3 ways
    "batch_size=8 is not divisible by the 3 batch shards (mesh.data x mesh.fsdp); "
    "use --config.batch_size=6 or 9",
  ),
}


def _fatal_lines(output: str) -> list[str]:
  return [line for line in output.splitlines() if line.startswith("FATAL")]


@pytest.mark.parametrize("case", CASES)
def test_a_user_mistake_is_one_fatal_line(case, tmp_path, shapesworld_cache):
  flags, expected = CASES[case]
  workdir = tmp_path / "run"
  if case == "workdir_is_a_file":
    workdir.write_text("")
  env = devices_env(3 if case == "batch_not_divisible" else 1)
  result = run_main(
    *flags,
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={shapesworld_cache}",
    env=env,
    timeout=300,
  )
  output = result.stdout + result.stderr
  assert result.returncode != 0, output[-2000:]
  assert "Traceback" not in output, output[-3000:]
  (line,) = _fatal_lines(output)
  assert expected in line, line


def test_verbose_adds_the_traceback(tmp_path):
  result = run_main(
    TINY,
    f"--workdir={tmp_path}",
    "--config.data.path=/no/such/dir",
    "--verbose",
    env=devices_env(1),
    timeout=300,
  )
  assert result.returncode != 0
  assert "Traceback" in result.stderr and "/no/such/dir does not exist" in result.stderr
