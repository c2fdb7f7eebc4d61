"""End to end through `python -m svilm.main`: outputs, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import time

from tests.conftest import REPO_ROOT
from tests.conftest import main_command

EXPECTED_KEYS = {
  "step",
  "retrieval/num_clips",
  *(f"retrieval/{d}_{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR")),
  "grounding/pointing_acc",
  "grounding/pointing_acc_random",
  "temporal_grouping/accuracy",
  "temporal_grouping/accuracy_random",
}


def _command(workdir, cache):
  return main_command(
    "--config=configs/pretrain.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={cache}",
    "--config.total_steps=60",
    "--config.checkpoint_every_steps=10",
    "--config.evals.heldout.every_steps=40",
  )


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return env


def _steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def test_killed_run_resumes_to_the_same_results(shapesworld_cache, tmp_path):
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  result = subprocess.run(
    _command(full, shapesworld_cache),
    cwd=REPO_ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(full, "eval_results.json")) as f:
    reference = json.load(f)
  assert EXPECTED_KEYS <= set(reference), EXPECTED_KEYS - set(reference)
  assert "Evaluation at step 40" in result.stderr
  assert reference["step"] == 60  # the step-40 evaluation was overwritten by the final one
  assert _steps(full)[-1] == 60
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(full))

  # Same command, killed with SIGKILL as soon as the step-10 checkpoint is complete.
  process = subprocess.Popen(
    _command(killed, shapesworld_cache),
    cwd=REPO_ROOT,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  while not _steps(killed) and time.time() < deadline and process.poll() is None:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert 0 < _steps(killed)[-1] < 60, _steps(killed)
  assert not os.path.exists(os.path.join(killed, "eval_results.json"))

  result = subprocess.run(
    _command(killed, shapesworld_cache),
    cwd=REPO_ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from checkpoint" in result.stderr
  with open(os.path.join(killed, "eval_results.json")) as f:
    assert json.load(f) == reference


def test_sigterm_saves_the_current_step_and_exits_cleanly(shapesworld_cache, tmp_path):
  workdir = str(tmp_path / "preempted")
  command = main_command(
    "--config=configs/pretrain.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={shapesworld_cache}",
    "--config.total_steps=100",
    "--config.checkpoint_every_steps=1000",
    "--config.log_every_steps=2",
  )
  process = subprocess.Popen(
    command, cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )
  for line in process.stderr:  # wait until training is under way
    if "step 4/100" in line:
      process.send_signal(signal.SIGTERM)
      break
  rest = process.communicate(timeout=300)[1]
  assert process.returncode == 0, rest[-3000:]
  assert "Preempted (SIGTERM)" in rest
  (saved,) = _steps(workdir)  # only the preemption checkpoint exists
  assert 4 <= saved < 100
  assert not os.path.exists(os.path.join(workdir, "eval_results.json"))

  result = subprocess.run(
    command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resumed from checkpoint at step {saved}" in result.stderr
  with open(os.path.join(workdir, "eval_results.json")) as f:
    assert json.load(f)["step"] == 100
