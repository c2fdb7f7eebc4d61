"""The launch scripts: exact dry-run commands, nothing run in dry runs, workdir checks, runner,
and one FATAL line (no traceback) when gcloud, xpk or sbatch is not installed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import pytest

from launch import common
from launch import gke_xpk
from launch import slurm
from launch import tpu_vm

TRAIN = [
  "--config=configs/pretrain.py",
  "--workdir=gs://bkt/svilm/run1",
  "--override=total_steps=5000",
  "--override=data.path=gs://bkt/my shards",
]
# subprocess.run itself, for the tests that run commands while the fixtures below stub it.
RUN_FOR_REAL = subprocess.run
# The training command as it appears inside a quoted --command=... argument.
TRAIN_IN_QUOTES = (
  "-m svilm.main --config=configs/pretrain.py --workdir=gs://bkt/svilm/run1 "
  "--config.total_steps=5000 '\"'\"'--config.data.path=gs://bkt/my shards'\"'\"'"
)


@pytest.fixture
def no_subprocess(monkeypatch):
  """Any attempt to run a command fails the test."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"subprocess.run called in a dry run: {args}")

  monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture
def fake_run(monkeypatch):
  """subprocess.run that records argv and answers from a queue of (status, stdout).

  Every program counts as installed, so the runner gets as far as subprocess.run.
  """
  calls, answers = [], []

  def run(argv, **kwargs):
    calls.append(argv)
    status, stdout = answers.pop(0) if answers else (0, "")
    return subprocess.CompletedProcess(argv, status, stdout=stdout, stderr="boom")

  monkeypatch.setattr(subprocess, "run", run)
  monkeypatch.setattr(common.time, "sleep", lambda s: None)
  monkeypatch.setattr(common.shutil, "which", lambda name: f"/usr/bin/{name}")
  return calls, answers


def _lines(capsys):
  return capsys.readouterr().out.splitlines()


def test_tpu_vm_all_dry_run_prints_exact_commands(no_subprocess, capsys):
  assert (
    tpu_vm.main(
      [
        "all",
        "logs",
        "delete",
        "--dry-run",
        "--name=svilm-v5e",
        "--zone=us-west4-a",
        "--project=my-proj",
        "--accelerator_type=v5litepod-16",
        "--spot",
        "--repo=https://github.com/me/svilm.git",
      ]
      + TRAIN
    )
    == 0
  )
  where = "--zone=us-west4-a --project=my-proj"
  ssh = f"gcloud compute tpus tpu-vm ssh svilm-v5e {where}"
  assert _lines(capsys) == [
    f"gcloud compute tpus queued-resources create svilm-v5e --node-id=svilm-v5e {where} "
    "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot",
    f"gcloud compute tpus queued-resources describe svilm-v5e {where} "
    "'--format=value(state.state)'",
    f"{ssh} --worker=all '--command=rm -rf ~/svilm && "
    "git clone https://github.com/me/svilm.git ~/svilm'",
    f"{ssh} --worker=all '--command=curl -LsSf https://astral.sh/uv/install.sh | sh && "
    "~/.local/bin/uv venv --clear --python 3.11 ~/svilm-venv'",
    f"{ssh} --worker=all '--command=cd ~/svilm && ~/.local/bin/uv pip install "
    "--python ~/svilm-venv/bin/python -e . '\"'\"'jax[tpu]'\"'\"''",
    f"{ssh} --worker=all '--command=cd ~/svilm && nohup ~/svilm-venv/bin/python "
    f"{TRAIN_IN_QUOTES} > ~/svilm_train.log 2>&1 < /dev/null &'",
    f"{ssh} --worker=0 '--command=tail -f ~/svilm_train.log'",
    f"gcloud compute tpus queued-resources delete svilm-v5e {where} --force --quiet",
  ]


def test_tpu_vm_install_copies_a_local_checkout(no_subprocess, capsys, tmp_path):
  assert tpu_vm.main(["install", "--dry-run", "--name=n", "--zone=z", f"--repo={tmp_path}"]) == 0
  assert _lines(capsys)[:2] == [
    "gcloud compute tpus tpu-vm ssh n --zone=z --worker=all '--command=rm -rf ~/svilm'",
    f"gcloud compute tpus tpu-vm scp --recurse {tmp_path} n:svilm --zone=z --worker=all",
  ]


def _fake_program(path, script):
  path.write_text("#!/bin/sh\n" + script)
  path.chmod(0o755)


def test_tpu_vm_install_makes_a_python_311_env_and_run_uses_it(no_subprocess, capsys, tmp_path):
  """The remote commands, run by bash in a fake home as a worker would (curl, uv and the env's
  python faked): uv comes from its installer, the env is made with Python 3.11, the code is
  installed into it, and training starts with its python, in ~/svilm, logging to the log."""
  flags = [
    "--name=n",
    "--zone=z",
    "--repo=https://x/svilm.git",
    "--config=c.py",
    "--workdir=gs://b/r",
  ]
  assert tpu_vm.main(["install", "run", "--dry-run"] + flags) == 0
  remote = [shlex.split(line)[-1].removeprefix("--command=") for line in _lines(capsys)]
  assert remote[1:] == [
    "curl -LsSf https://astral.sh/uv/install.sh | sh && "
    "~/.local/bin/uv venv --clear --python 3.11 ~/svilm-venv",
    "cd ~/svilm && ~/.local/bin/uv pip install --python ~/svilm-venv/bin/python -e . 'jax[tpu]'",
    "cd ~/svilm && nohup ~/svilm-venv/bin/python -m svilm.main --config=c.py "
    "--workdir=gs://b/r > ~/svilm_train.log 2>&1 < /dev/null &",
  ]
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  (home / "svilm").mkdir(parents=True)
  bin_dir.mkdir()
  # uv records its arguments and working directory; making a venv gives it a python that
  # prints its own.
  _fake_program(
    tmp_path / "uv",
    'echo "$PWD uv $*" >> "$HOME/uv.log"\n'
    'if [ "$1" = venv ]; then\n'
    '  mkdir -p "$5/bin" && printf \'#!/bin/sh\\necho "$PWD python $*"\\n\' > "$5/bin/python"\n'
    '  chmod +x "$5/bin/python"\n'
    "fi\n",
  )
  _fake_program(
    bin_dir / "curl",
    f"echo 'mkdir -p ~/.local/bin && cp {tmp_path / 'uv'} ~/.local/bin/uv'\n",
  )
  env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}  # ssh starts in the home
  for command in remote[1:]:
    RUN_FOR_REAL(["bash", "-c", command], cwd=home, env=env, check=True, timeout=60)
  assert (home / "uv.log").read_text().splitlines() == [
    f"{home} uv venv --clear --python 3.11 {home}/svilm-venv",
    f"{home}/svilm uv pip install --python {home}/svilm-venv/bin/python -e . jax[tpu]",
  ]
  log = home / "svilm_train.log"
  deadline = time.monotonic() + 30
  while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
    time.sleep(0.05)  # training went to the background (nohup ... &)
  assert log.read_text() == (
    f"{home}/svilm python -m svilm.main --config=c.py --workdir=gs://b/r\n"
  )


# Each launcher with the program it runs missing from PATH (the others it needs present).
MISSING_PROGRAM_CASES = [
  (
    "launch.tpu_vm",
    ["all", "--name=n", "--zone=z", "--accelerator_type=v4-8"],
    [],
    "gcloud",
    "https://cloud.google.com/sdk/docs/install",
  ),
  (
    "launch.gke_xpk",
    ["run", "--cluster=c", "--workload=w", "--zone=z", "--tpu_type=v4-16", "--docker_image=i"],
    ["gcloud", "kubectl"],
    "xpk",
    "pip install xpk",
  ),
  ("launch.slurm", ["--nodes=2"], [], "sbatch", "SLURM login node"),
]


@pytest.mark.parametrize("module,flags,present,missing,hint", MISSING_PROGRAM_CASES)
def test_a_missing_program_is_one_fatal_line_saying_how_to_install_it(
  module, flags, present, missing, hint, tmp_path
):
  """The real CLI, with a PATH holding only the other programs (which fail if run)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in present:
    _fake_program(bin_dir / name, "exit 99\n")
  env = dict(os.environ, PATH=str(bin_dir), PYTHONPATH=common.REPO_ROOT)
  workdir = "/shared/r" if module == "launch.slurm" else "gs://b/r"
  argv = [sys.executable, "-m", module] + flags + ["--config=c.py", f"--workdir={workdir}"]
  result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 1
  assert result.stdout == ""
  assert "Traceback" not in result.stderr
  (line,) = result.stderr.splitlines()
  assert line.startswith(f"FATAL {missing} is not on PATH: ")
  assert hint in line
  assert os.listdir(tmp_path) == ["bin"]  # nothing written (slurm's sbatch script included)
  # A dry run needs none of the programs: it only prints.
  dry = subprocess.run(
    argv + ["--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
  )
  assert dry.returncode == 0 and dry.stderr == ""
  assert f"{missing} " in dry.stdout


def test_every_missing_program_is_named_on_the_one_line(monkeypatch, capsys):
  """xpk runs gcloud and kubectl itself, so those are checked with it, before anything runs."""
  monkeypatch.setattr(common.shutil, "which", lambda name: None)
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
  flags = ["--cluster=c", "--workload=w", "--zone=z"]
  assert gke_xpk.main(["delete", "logs"] + flags) == 1
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith("FATAL xpk, gcloud, kubectl are not on PATH. xpk: install it with ")
  assert "kubectl: install it with `gcloud components install kubectl`" in line


@pytest.mark.parametrize(
  "module,flags",
  [
    (tpu_vm, ["run", "--name=n", "--zone=z"]),
    (
      gke_xpk,
      ["run", "--cluster=c", "--workload=w", "--zone=z", "--tpu_type=v4-16", "--docker_image=img"],
    ),
  ],
)
def test_tpu_and_gke_refuse_a_workdir_that_is_not_gcs(module, flags, no_subprocess, capsys):
  assert (
    module.main(flags + ["--dry-run", "--config=configs/pretrain.py", "--workdir=/home/me/run1"])
    == 1
  )
  captured = capsys.readouterr()
  assert captured.out == ""  # the plan is refused before anything is printed or run
  assert "--workdir=/home/me/run1 is not a gs:// path" in captured.err
  assert "must see the same directory" in captured.err


def test_gke_xpk_dry_run_prints_exact_commands(no_subprocess, capsys):
  assert (
    gke_xpk.main(
      [
        "run",
        "logs",
        "delete",
        "--dry-run",
        "--cluster=tpu-cluster",
        "--workload=svilm-run1",
        "--zone=us-west4-a",
        "--project=my-proj",
        "--tpu_type=v5litepod-16",
        "--num_slices=2",
        "--docker_image=gcr.io/my-proj/svilm:latest",
      ]
      + TRAIN
    )
    == 0
  )
  where = "--zone=us-west4-a --project=my-proj"
  assert _lines(capsys) == [
    "xpk workload create --cluster=tpu-cluster --workload=svilm-run1 "
    "--tpu-type=v5litepod-16 --num-slices=2 --docker-image=gcr.io/my-proj/svilm:latest "
    f"{where} '--command=python {TRAIN_IN_QUOTES}'",
    f"xpk workload list --cluster=tpu-cluster {where}",
    "gcloud container clusters get-credentials tpu-cluster --region=us-west4 --project=my-proj",
    "kubectl logs --follow --selector=jobset.sigs.k8s.io/jobset-name=svilm-run1,"
    "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0",
    f"xpk workload delete --cluster=tpu-cluster --workload=svilm-run1 {where}",
  ]


def test_gke_xpk_base_image_installs_the_checkout_first(no_subprocess, capsys):
  assert (
    gke_xpk.main(
      [
        "run",
        "--dry-run",
        "--cluster=c",
        "--workload=w",
        "--zone=z",
        "--device_type=h100-80gb-8",
        "--base_docker_image=python:3.11",
        "--config=configs/pretrain.py",
        "--workdir=gs://b/r",
      ]
    )
    == 0
  )
  assert _lines(capsys) == [
    "xpk workload create --cluster=c --workload=w --device-type=h100-80gb-8 --num-slices=1 "
    f"--base-docker-image=python:3.11 --script-dir={common.REPO_ROOT} --zone=z "
    "'--command=pip install -e . '\"'\"'jax[cuda12]'\"'\"' && python -m svilm.main "
    "--config=configs/pretrain.py --workdir=gs://b/r'"
  ]


def test_slurm_dry_run_prints_the_script_and_sbatch(no_subprocess, capsys, tmp_path):
  assert (
    slurm.main(
      [
        "--dry-run",
        "--nodes=4",
        "--gpus_per_node=8",
        "--partition=gpu",
        "--account=vision",
        "--time=2:00:00",
        "--job_name=svilm-run1",
        "--venv=/shared/venvs/svilm",
        "--repo=/shared/svilm",
        f"--script_path={tmp_path}/run1.sbatch",
        "--config=configs/pretrain.py",
        "--workdir=/shared/runs/run1",
        "--override=data.path=/shared/my shards",
      ]
    )
    == 0
  )
  assert _lines(capsys) == [
    "#!/bin/bash",
    "#SBATCH --job-name=svilm-run1",
    "#SBATCH --nodes=4",
    "#SBATCH --ntasks-per-node=1",
    "#SBATCH --gpus-per-node=8",
    "#SBATCH --cpus-per-task=16",
    "#SBATCH --time=2:00:00",
    "#SBATCH --output=svilm-%j.out",
    "#SBATCH --partition=gpu",
    "#SBATCH --account=vision",
    "",
    "set -euo pipefail",
    "cd /shared/svilm",
    "source /shared/venvs/svilm/bin/activate",
    "# Process 0 (the coordinator) runs on the allocation's first node.",
    'export COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
    ':12345"',
    "srun --kill-on-bad-exit=1 bash -c 'exec python -m svilm.main "
    "--config=configs/pretrain.py --workdir=/shared/runs/run1 "
    "'\"'\"'--config.data.path=/shared/my shards'\"'\"' "
    '--coordinator_address="$COORDINATOR_ADDRESS" --num_processes="$SLURM_NTASKS" '
    '--process_id="$SLURM_PROCID"\'',
    f"sbatch {tmp_path}/run1.sbatch",
  ]
  assert not (tmp_path / "run1.sbatch").exists()  # a dry run writes nothing either


def test_slurm_srun_line_gives_each_task_its_own_rank():
  """The srun line, run by bash as a task would, yields the intended argv for rank 3."""
  args = slurm.build_parser().parse_args(
    ["--nodes=4", "--config=c.py", "--workdir=/shared/r", "--override=a.b=x y"]
  )
  srun = [line for line in slurm.sbatch_script(args).splitlines() if line.startswith("srun ")][0]
  # The batch shell hands `bash -c` one single-quoted word (shlex splits it as bash does); run
  # that word as a task would, with printf standing in for python.
  argv = shlex.split(srun)
  assert argv[:4] == ["srun", "--kill-on-bad-exit=1", "bash", "-c"] and len(argv) == 5
  assert argv[4].startswith("exec python ")
  probe = argv[4].replace("exec python ", "printf '%s\\n' ", 1)
  result = subprocess.run(
    ["bash", "-c", probe],
    capture_output=True,
    text=True,
    check=True,
    env={"COORDINATOR_ADDRESS": "node7:12345", "SLURM_NTASKS": "4", "SLURM_PROCID": "3"},
  )
  assert result.stdout.splitlines() == [
    "-m",
    "svilm.main",
    "--config=c.py",
    "--workdir=/shared/r",
    "--config.a.b=x y",
    "--coordinator_address=node7:12345",
    "--num_processes=4",
    "--process_id=3",
  ]


def test_slurm_refuses_node_local_workdir(no_subprocess, capsys):
  assert slurm.main(["--dry-run", "--nodes=2", "--config=c.py", "--workdir=/tmp/run1"]) == 1
  captured = capsys.readouterr()
  assert captured.out == ""
  assert "--workdir=/tmp/run1 is node-local storage" in captured.err


def test_slurm_real_run_writes_the_script_then_submits_it(fake_run, tmp_path):
  calls, _ = fake_run
  path = tmp_path / "job.sbatch"
  assert (
    slurm.main(["--nodes=2", "--config=c.py", "--workdir=/shared/r", f"--script_path={path}"]) == 0
  )
  assert calls == [["sbatch", str(path)]]
  assert path.read_text().startswith("#!/bin/bash\n#SBATCH --job-name=svilm\n#SBATCH --nodes=2\n")


def test_run_stops_at_the_first_failure_and_names_it(fake_run, capsys):
  calls, answers = fake_run
  answers.extend([(0, ""), (7, "")])  # the second command fails with status 7
  assert (
    tpu_vm.main(
      [
        "create",
        "install",
        "delete",
        "--name=n",
        "--zone=z",
        "--accelerator_type=v4-8",
        "--repo=git@github.com:me/svilm.git",
      ]
    )
    == 1
  )
  assert len(calls) == 2  # create, then the clone that failed; nothing after it
  assert calls[0][:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "n"]
  err = capsys.readouterr().err
  assert (
    "FATAL command failed with exit status 7: gcloud compute tpus tpu-vm ssh n --zone=z "
    "--worker=all '--command=rm -rf ~/svilm && git clone git@github.com:me/svilm.git "
    "~/svilm'"
  ) in err


def test_wait_polls_until_active_and_stops_on_failed(fake_run):
  calls, answers = fake_run
  answers.extend([(0, "WAITING_FOR_RESOURCES\n"), (0, "PROVISIONING\n"), (0, "ACTIVE\n")])
  assert tpu_vm.main(["wait", "--name=n", "--zone=z"]) == 0
  assert len(calls) == 3
  answers.extend([(0, "WAITING_FOR_RESOURCES\n"), (0, "FAILED\n"), (0, "ACTIVE\n")])
  assert tpu_vm.main(["wait", "--name=n", "--zone=z"]) == 1
  assert len(calls) == 5  # stopped at FAILED


def test_training_command_and_override_errors():
  assert common.training_command("configs/pretrain.py", "/w", ["a.b=1", "c=x=y"]) == [
    "python",
    "-m",
    "svilm.main",
    "--config=configs/pretrain.py",
    "--workdir=/w",
    "--config.a.b=1",
    "--config.c=x=y",
  ]
  with pytest.raises(common.LaunchError, match="is not KEY=VALUE"):
    common.training_command("c.py", "/w", ["total_steps"])
  with pytest.raises(common.LaunchError, match="--config and --workdir are required"):
    common.training_command("c.py", None, [])
