"""Two JAX processes on one machine (4 fake CPU devices each) train and evaluate together."""

import json
import os
import socket
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_the_tiny_config_together(shapesworld_cache, tmp_path):
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  processes = [subprocess.Popen(
      [sys.executable, "-m", "svilm.main", "--config=configs/pretrain.py:tiny",
       f"--workdir={tmp_path}", f"--config.data.shapesworld_dir={shapesworld_cache}",
       "--config.total_steps=4", "--config.checkpoint_every_steps=2",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "8 device(s), process 0 of 2" in outputs[0].replace("cpu ", "")
  assert "8 devices, global batch 8" in outputs[1]
  with open(tmp_path / "eval_results.json") as f:      # written once, by process 0
    results = json.load(f)
  assert results["step"] == 4 and results["retrieval/num_clips"] > 0
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps == [2, 4]
