"""A user's mistake ends `python -m svilm.main` with one FATAL line that names it, no traceback.

Each case is run as a user would run it. The first three fail before JAX and TensorFlow load;
all but the diverged run fail before the train step compiles.
"""

import os

import pytest

from svilm import data_setup
from tests.conftest import devices_env
from tests.conftest import run_main
from tests.conftest import tiny_config

TINY = "--config=configs/pretrain.py:tiny"


def _shards_like(cache: str, directory, *, splits=("train", "val"), tokenizer=True) -> str:
  """A shard directory holding links to the tiny ShapesWorld's `splits` (and tokenizer)."""
  built = data_setup.shapesworld_path(tiny_config(cache))  # other tasks build others there
  directory.mkdir()
  for name in os.listdir(built):
    wanted = name.split("-")[0] in splits or (tokenizer and name == "tokenizer.model")
    if wanted:
      os.symlink(os.path.join(built, name), directory / name)
  return str(directory)


def _only_train_split(tmp_path, cache):
  return [f"--config.data.path={_shards_like(cache, tmp_path / 'shards', splits=('train',))}"]


def _empty_eval_split(tmp_path, cache):
  (tmp_path / "heldout").mkdir()
  (tmp_path / "heldout" / "val-00000-of-00001.tfrecord").write_bytes(b"")
  return [f"--config.data.eval_path={tmp_path / 'heldout'}"]


def _no_tokenizer(tmp_path, cache):
  return [f"--config.data.path={_shards_like(cache, tmp_path / 'shards', tokenizer=False)}"]


# name: (flags, extra flags made from (tmp_path, ShapesWorld cache), expected in the FATAL line)
CASES = {
  "config_path_typo": (
    ["--config=configs/pretrian.py"],
    None,
    "there is no config file 'configs/pretrian.py'",
  ),
  "unknown_variant": (["--config=configs/pretrain.py:tine"], None, "Unknown variant(s) ['tine']"),
  "misspelt_key": (
    [TINY, "--config.total_step=10"],
    None,
    'Did you mean "total_steps" instead of "total_step"?',
  ),
  "workdir_is_a_file": ([TINY], None, "is a file; the workdir must be a directory"),
  "missing_data_path": (
    [TINY, "--config.data.path=/no/such/dir"],
    None,
    "/no/such/dir does not exist",
  ),
  "batch_not_divisible": (
    [TINY],  # on 3 devices: the tiny batch of 8 cannot be split 3 ways
    None,
    "batch_size=8 is not divisible by the 3 batch shards (mesh.data x mesh.fsdp); "
    "use --config.batch_size=6 or 9",
  ),
  "shards_without_val_split": (
    [TINY],
    _only_train_split,
    "has no 'val' split (val-*.tfrecord) for the held-out data: build it with "
    "`python -m data_pipelines.build_shards",
  ),
  "empty_eval_split": ([TINY], _empty_eval_split, "holds no clips"),
  "shards_without_tokenizer": ([TINY], _no_tokenizer, "pass --config.data.tokenizer=PATH.model"),
  "missing_init_from": (
    [TINY, "--config.init_from=/no/such/run"],
    None,
    "config.init_from='/no/such/run' does not exist",
  ),
  "diverged": (
    [TINY, "--config.optim.learning_rate=1e6", "--config.total_steps=4"],
    None,
    "Non-finite training values at step",
  ),
}


def _fatal_lines(output: str) -> list[str]:
  return [line for line in output.splitlines() if line.startswith("FATAL")]


@pytest.mark.parametrize("case", CASES)
def test_a_user_mistake_is_one_fatal_line(case, tmp_path, shapesworld_cache):
  flags, make_flags, expected = CASES[case]
  workdir = tmp_path / "run"
  if case == "workdir_is_a_file":
    workdir.write_text("")
  if make_flags is not None:
    flags = flags + make_flags(tmp_path, shapesworld_cache)
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
