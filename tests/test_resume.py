"""End to end through `python -m svilm.main`: outputs, and exact resume after SIGTERM and SIGKILL.

The runs use one device and share the session's compilation cache (conftest.one_device_env):
the reference run compiles the step, the interrupted runs load it. Resuming on other meshes
and process counts is tests/test_elastic_restore.py's and tests/test_multiprocess.py's.
"""

import json
import os
import signal
import subprocess
import time

import pytest

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
TOTAL_STEPS = 12


def _command(workdir, cache):
  return main_command(
    "--config=configs/pretrain.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.shapesworld_dir={cache}",
    f"--config.total_steps={TOTAL_STEPS}",
    "--config.checkpoint_every_steps=3",
    "--config.log_every_steps=2",
    "--config.evals.heldout.every_steps=6",
  )


def _image_tags(workdir) -> list[str]:
  """Tags of the image summaries in the workdir's TensorBoard events."""
  import tensorflow as tf

  tags = set()
  for name in os.listdir(workdir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        for value in event.summary.value:
          if value.metadata.plugin_data.plugin_name == "images":
            tags.add(value.tag)
  return sorted(tags)


def _steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _run(command, env):
  result = subprocess.run(
    command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_preempted_then_killed_run_resumes_to_the_same_results(
  shapesworld_cache, one_device_env, tmp_path
):
  full, interrupted = str(tmp_path / "full"), str(tmp_path / "interrupted")
  result = _run(_command(full, shapesworld_cache), one_device_env)
  with open(os.path.join(full, "eval_results.json")) as f:
    reference = json.load(f)
  assert EXPECTED_KEYS <= set(reference), EXPECTED_KEYS - set(reference)
  assert "Evaluation at step 6" in result.stderr
  assert reference["step"] == TOTAL_STEPS  # the step-6 evaluation was overwritten by the last
  assert _steps(full)[-1] == TOTAL_STEPS
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(full))
  # The figures of each evaluation (4 clips' grounding maps, one similarity panel), as PNGs
  # and as TensorBoard images.
  pngs = sorted(os.listdir(os.path.join(full, "figures")))
  assert len(pngs) == 2 * 5 and "figures_grounding_0_000006.png" in pngs, pngs
  assert "figures_cut_and_paste_similarity_000012.png" in pngs
  assert set(_image_tags(full)) == {f"figures/grounding_{n}" for n in range(4)} | {
    "figures/cut_and_paste_similarity"
  }
  # The console: the final metrics on stdout beside their baselines, compilation logged on its
  # own, the resolved config in config.json (not as a log line).
  table = result.stdout.splitlines()
  assert table[0] == f"Final metrics at step {TOTAL_STEPS} (all in {full}/eval_results.json):"
  pointing = next(line.split() for line in table if line.split()[0] == "grounding/pointing_acc")
  assert [float(x) for x in pointing[1:]] == pytest.approx(
    [reference["grounding/pointing_acc"], reference["grounding/pointing_acc_random"]], abs=1e-4
  )
  assert "Train step compiled; step 1 took" in result.stderr
  assert "[Hyperparameters]" not in result.stderr and "libtpu" not in result.stderr
  with open(os.path.join(full, "config.json")) as f:
    assert json.load(f)["total_steps"] == TOTAL_STEPS

  # SIGTERM (a preemption notice) once training is under way: the current step is saved and
  # the process exits cleanly, without evaluating.
  command = _command(interrupted, shapesworld_cache)
  process = subprocess.Popen(
    command,
    cwd=REPO_ROOT,
    env=one_device_env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in process.stderr:
    if f"step 2/{TOTAL_STEPS}" in line:
      process.send_signal(signal.SIGTERM)
      break
  rest = process.communicate(timeout=300)[1]
  assert process.returncode == 0, rest[-3000:]
  preempted = _steps(interrupted)[-1]
  assert 2 <= preempted < TOTAL_STEPS
  assert f"Preempted (SIGTERM) after step {preempted}" in rest

  # The same command resumes; SIGKILL as soon as it has written a newer checkpoint.
  process = subprocess.Popen(
    command, cwd=REPO_ROOT, env=one_device_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 300
  while _steps(interrupted)[-1] == preempted and time.time() < deadline and process.poll() is None:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed = _steps(interrupted)[-1]
  assert preempted < killed < TOTAL_STEPS, _steps(interrupted)

  # And once more: it ends exactly where the uninterrupted run ended.
  result = _run(command, one_device_env)
  assert f"Resumed from checkpoint at step {killed}" in result.stderr
  with open(os.path.join(interrupted, "eval_results.json")) as f:
    assert json.load(f) == reference
