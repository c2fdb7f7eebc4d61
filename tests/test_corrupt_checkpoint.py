"""A checkpoint whose files are damaged is moved aside and the run resumes from an older one.

Through `python -m svilm.main` on one device (sharing the session's compilation cache, see
conftest.one_device_env): one uninterrupted reference run, then copies of its step-2 and step-4
checkpoints with bytes flipped in an array data file. The bytes flipped are the first of a
data file, the header of a zstd-compressed chunk: Orbax stores the arrays without checksums, so
a flip inside a chunk's payload is read back without an error (and goes unnoticed).
"""

import glob
import json
import os
import shutil

import jax
import pytest

from svilm import checkpointing
from svilm import configuration
from tests.conftest import prepare_and_setup
from tests.conftest import run_main


def _flags(workdir, cache):
  return (
    "--config=configs/pretrain.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={cache}",
    "--config.total_steps=6",
    "--config.checkpoint_every_steps=2",
    "--config.keep_checkpoints=3",
  )


@pytest.fixture(scope="module")
def reference(shapesworld_cache, one_device_env, tmp_path_factory):
  """(workdir, eval_results) of the uninterrupted run, with checkpoints at steps 2, 4 and 6."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  result = run_main(*_flags(workdir, shapesworld_cache), env=one_device_env)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "eval_results.json")) as f:
    return workdir, json.load(f)


def _copy_checkpoints(reference_workdir, workdir, steps):
  for step in steps:
    shutil.copytree(
      os.path.join(reference_workdir, "checkpoints", str(step)),
      os.path.join(workdir, "checkpoints", str(step)),
    )


def _flip_array_bytes(workdir, step):
  """Flips the first 16 bytes of the step's largest array data file."""
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "*", "d", "*"))
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    head = f.read(16)
    f.seek(0)
    f.write(bytes(b ^ 0xFF for b in head))


def test_a_corrupt_newest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous(
  reference, shapesworld_cache, one_device_env, tmp_path
):
  reference_workdir, expected = reference
  workdir = str(tmp_path)
  _copy_checkpoints(reference_workdir, workdir, (2, 4))
  _flip_array_bytes(workdir, 4)
  result = run_main(*_flags(workdir, shapesworld_cache), env=one_device_env)
  assert result.returncode == 0, result.stderr[-3000:]
  aside = os.path.join(workdir, "checkpoints", "corrupt-4")
  warnings = [
    line for line in result.stderr.splitlines() if "Checkpoint at step 4 cannot be read" in line
  ]
  assert len(warnings) == 1 and aside in warnings[0], result.stderr[-3000:]
  assert "Cause: FAILED_PRECONDITION" in warnings[0]  # zstd: the chunk does not decode
  assert "Resumed from checkpoint at step 2" in result.stderr
  assert "Traceback" not in result.stderr
  assert os.path.isdir(aside)
  # Orbax no longer lists it: the run wrote steps 4 and 6 again, and the results are exactly
  # those of the run that was never damaged.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6", "corrupt-4"]
  with open(os.path.join(workdir, "eval_results.json")) as f:
    assert json.load(f) == expected


def test_no_readable_checkpoint_is_one_fatal_line_and_never_a_fresh_start(
  reference, shapesworld_cache, one_device_env, tmp_path
):
  workdir = str(tmp_path)
  _copy_checkpoints(reference[0], workdir, (2, 4))
  for step in (2, 4):
    _flip_array_bytes(workdir, step)
  checkpoints = os.path.join(workdir, "checkpoints")
  # The second run finds only what the first moved aside: still no fresh start.
  for expected in ("steps 4, 2 could not be read", "an earlier run moved the unreadable ones"):
    result = run_main(*_flags(workdir, shapesworld_cache), env=one_device_env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    fatal = [line for line in output.splitlines() if line.startswith("FATAL")]
    assert len(fatal) == 1, output[-3000:]
    assert expected in fatal[0], fatal[0]
    assert all(os.path.join(checkpoints, f"corrupt-{s}") in fatal[0] for s in (2, 4))
    assert "new --workdir" in fatal[0]
    assert "Traceback" not in output
    assert sorted(os.listdir(checkpoints)) == ["corrupt-2", "corrupt-4"]
    assert not os.path.exists(os.path.join(workdir, "eval_results.json"))


def test_a_checkpoint_that_does_not_fit_is_a_config_error_and_stays(reference, tiny, tmp_path):
  # Its files are fine; the config changed (another parameter layout): nothing is moved.
  _copy_checkpoints(reference[0], str(tmp_path), (2, 4))
  tiny.model.scan_layers = True
  ctx, _, _ = prepare_and_setup(tiny, jax.devices()[:1])
  manager = checkpointing.make_manager(str(tmp_path), keep=3)
  with pytest.raises(configuration.ConfigError, match="does not fit this run's train state"):
    checkpointing.restore_newest_readable(manager, ctx.abstract_state, ctx.state_shardings)
  manager.close()
  assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["2", "4"]
