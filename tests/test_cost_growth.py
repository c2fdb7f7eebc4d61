"""benchmarks/cost_growth.py: its FLOP formulas against XLA, its HLO collective parser on
programs whose traffic is known by hand, its growth arithmetic, and both halves end to end.

The two end-to-end runs (a frames sweep, and the mesh sweep on 8 fake devices) are started as
background processes when this module's first test starts, so they compile while the in-process
checks run; the last two tests wait for them. Like every test process they use XLA's cheapest
CPU code generation (conftest; their timings are not read).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from benchmarks import cost_growth
from configs import pretrain as pretrain_config
from svilm import compile_check
from svilm import configuration
from svilm.trainers import trainer
from tests.conftest import REPO_ROOT
from tests.conftest import devices_env

VOCAB = 512
RUNS = {
  "frames": ["--sweeps=frames", "--frames=4,8"],
  "mesh": ["--sweeps=mesh", "--meshes=8x1x1"],
}


@pytest.fixture(scope="module", autouse=True)
def end_to_end_runs():
  """Starts both end-to-end runs (one device each; the mesh run spawns its 8-device worker)."""
  env = devices_env(1)
  common = ["--config=configs/pretrain.py:tiny", "--steps=1", "--warmup=0", "--repeats=1"]
  procs = {}
  for name, args in RUNS.items():
    # Files, not pipes: nobody reads the output until the run ends, and a full pipe would
    # block it.
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    procs[name] = (
      subprocess.Popen(
        [sys.executable, "benchmarks/cost_growth.py", *common, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=out,
        stderr=err,
        text=True,
        start_new_session=True,
      ),
      out,
      err,
    )
  yield procs
  for proc, out, err in procs.values():  # a failed or interrupted test: stop run and worker
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    out.close()
    err.close()


def _result(run) -> dict:
  proc, out, err = run
  proc.wait(timeout=600)
  out.seek(0)
  err.seek(0)
  assert proc.returncode == 0, err.read()[-3000:]
  return json.loads(out.read().strip().splitlines()[-1])


def _tiny(**overrides):
  config = pretrain_config.get_config("tiny")
  for key, value in overrides.items():
    config = cost_growth.point_config(config, key, value)
  return configuration.finalize(config, num_devices=1, process_count=1, vocab_size=VOCAB)


def test_collective_bytes_of_a_known_program():
  mesh = jax.make_mesh((8,), ("x",))

  def per_device(x):  # x: this device's [1, 4] float32
    reduced = jax.lax.psum(x, "x")  # all-reduce       [1, 4] = 16 B
    gathered = jax.lax.all_gather(x, "x", tiled=True)  # all-gather       [8, 4] = 128 B
    scattered = jax.lax.psum_scatter(gathered, "x", tiled=True)  # reduce-scatter [1, 4] = 16 B
    shifted = jax.lax.ppermute(x, "x", [(i, (i + 1) % 8) for i in range(8)])  # [1, 4] = 16 B
    swapped = jax.lax.all_to_all(gathered, "x", 0, 0, tiled=True)  # all-to-all [8, 4] = 128 B
    return reduced + scattered + shifted + swapped[:1]

  step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("x"), out_specs=P("x")))
  x = jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("x")))
  found = cost_growth.collective_bytes(step.lower(x).compile().as_text())
  assert {k: v["bytes"] for k, v in found.items()} == {
    "all-gather": 128,
    "reduce-scatter": 16,
    "all-reduce": 16,
    "all-to-all": 128,
    "collective-permute": 16,
  }
  assert all(v["ops"] == 1 for v in found.values())


def test_collective_bytes_async_pairs_and_tuples():
  hlo = """
  %ags = (f32[1,4]{1,0}, f32[8,4]{1,0}) all-gather-start(f32[1,4]{1,0} %p), dimensions={0}
  %agd = f32[8,4]{1,0} all-gather-done((f32[1,4]{1,0}, f32[8,4]{1,0}) %ags)
  %ar = (f32[2]{0}, bf16[3,4]{1,0}) all-reduce(f32[2]{0} %a, bf16[3,4]{1,0} %b), to_apply=%add
  ROOT %flags = pred[4]{0} all-reduce(pred[4]{0} %c), to_apply=%or
  %not_one = f32[8,4]{1,0} add(f32[8,4]{1,0} %agd, f32[8,4]{1,0} %agd)
  """
  found = cost_growth.collective_bytes(hlo)
  assert found["all-gather"] == {"ops": 1, "bytes": 8 * 4 * 4}  # the -done only
  assert found["all-reduce"] == {"ops": 2, "bytes": 2 * 4 + 12 * 2 + 4}  # tuple, then pred
  assert found["reduce-scatter"] == {"ops": 0, "bytes": 0}


def test_analytic_flops_by_hand():
  config = _tiny()  # B 8, 8 frames of 64 px in (2, 16, 16) tubelets: N = 4 * 4 * 4 = 64
  assert cost_growth.video_tokens(config) == 64
  assert cost_growth.analytic_flops(config) == {
    "video_attention": 12 * 2 * 8 * 64**2 * 128,  # L 2, D 128
    "grouping": 12 * 2 * 8 * 64 * 8 * 128,  # G 2, M 8
    "batch_similarity": 6 * 8**2 * 256 * (1 + 2 * 8),
  }  # E 256, K 2


def test_quadratic_formulas_match_xla_and_flops_grow():
  """XLA's second difference isolates each x^2 term: f(x-h) - 2 f(x) + f(x+h) = 2 c h^2."""
  flops = lambda **kw: compile_check.model_flops_per_step(_tiny(**kw))
  base_flops = flops()  # 8 frames, batch 8: the first point of both sweeps
  by_frames = [base_flops] + [flops(**{"data.num_frames": f}) for f in (12, 16)]  # N = 64 .. 128
  by_batch = [base_flops] + [flops(batch_size=b) for b in (12, 16)]
  assert by_frames[0] < by_frames[1] < by_frames[2]
  assert by_batch[0] < by_batch[1] < by_batch[2]
  xla_attention = (by_frames[2] - 2 * by_frames[1] + by_frames[0]) / (2 * 32**2)
  xla_batch = (by_batch[2] - 2 * by_batch[1] + by_batch[0]) / (2 * 4**2)
  base = _tiny()
  formula_attention = cost_growth.analytic_flops(base)["video_attention"] / 64**2
  formula_batch = cost_growth.analytic_flops(base)["batch_similarity"] / 8**2
  # The formulas count matmuls only; XLA adds the softmaxes' elementwise FLOPs: measured
  # +2.6% for attention (about 10 per score and head against 12 D / H = 384 of matmul) and
  # +1.5% for the batch similarities. Below 1% or above 5% would mean a formula term is wrong.
  assert 1.01 < xla_attention / formula_attention < 1.05
  assert 1.005 < xla_batch / formula_batch < 1.05


def _point(x, time, flops, memory, attention):
  return {
    "x": x,
    "step_time_ms": time,
    "flops_per_step": flops,
    "peak_memory_bytes": memory,
    "flops_parts": {
      "video_attention": attention,
      "grouping": x,
      "batch_similarity": 1.0,
      "rest": flops - attention - x - 1.0,
    },
  }


def test_growth_exponents_and_quadratic_fit():
  # x 2 -> 8: time 10 -> 80 is x^1.5, FLOPs 1 + x + 3 x^2 (15 -> 201), memory 50 -> 100 x^0.5.
  points = [
    _point(x, 10 * (x / 2) ** 1.5, 1 + x + 3 * x * x, 50 * (x / 2) ** 0.5, 3 * x * x)
    for x in (2, 4, 8)
  ]
  g = cost_growth.growth(points, "x", 1.15)
  assert g["time_exponent"] == pytest.approx(1.5)
  assert g["flops_exponent"] == pytest.approx(np.log(201 / 15) / np.log(4))
  assert g["memory_exponent"] == pytest.approx(0.5)
  assert g["part_exponents"]["video_attention"] == pytest.approx(2.0)
  assert g["part_exponents"]["grouping"] == pytest.approx(1.0)
  assert g["part_exponents"]["batch_similarity"] == pytest.approx(0.0)
  assert g["super_linear"] == ["time", "flops"]
  assert g["quadratic_fit"]["measured"] == pytest.approx(3 * 8**2)
  assert cost_growth.growth_exponent(2, 2, 1, 5) is None


def test_frames_sweep_end_to_end(end_to_end_runs):
  result = _result(end_to_end_runs["frames"])
  assert set(result) == {"sweeps", "growth", "mesh", "notes"} and result["mesh"] == []
  points = result["sweeps"]["frames"]
  assert [p["value"] for p in points] == [4, 8]
  assert [p["video_tokens"] for p in points] == [32, 64]
  for p in points:
    assert p["step_time_min_ms"] <= p["step_time_ms"] <= p["step_time_max_ms"]
    assert p["peak_memory_bytes"] > 0
    assert sum(p["flops_parts"].values()) == pytest.approx(p["flops_per_step"])
  assert points[0]["flops_per_step"] < points[1]["flops_per_step"]
  growth = result["growth"]["frames"]
  assert growth["x"] == "video_tokens" and (growth["from"], growth["to"]) == (32, 64)
  for key in ("time_exponent", "flops_exponent", "memory_exponent"):
    assert growth[key] is not None
  assert growth["part_exponents"]["video_attention"] == pytest.approx(2.0)
  assert growth["part_exponents"]["grouping"] == pytest.approx(1.0)
  assert 0 < growth["flops_exponent"] < 1  # fixed costs (text tower, AdamW) dilute it


def test_mesh_sweep_end_to_end(end_to_end_runs):
  result = _result(end_to_end_runs["mesh"])
  assert result["sweeps"] == {} and "fake" in result["notes"][0]
  (point,) = result["mesh"]
  assert (point["mesh"], point["devices"], point["batch_size"]) == ("DP8", 8, 8)
  assert point["peak_memory_bytes"] > 0 and point["step_time_ms"] > 0
  # Data parallel: every gradient is all-reduced, so at least the parameters' float32 bytes.
  params = sum(x.size for x in jax.tree.leaves(_abstract_params(_tiny())))
  traffic = point["collectives"]
  assert 4 * params <= traffic["all-reduce"]["bytes"] < 1.5 * 4 * params
  assert point["collective_bytes_total"] == sum(v["bytes"] for v in traffic.values())


def _abstract_params(config):
  """The parameters of `config`'s model, as ShapeDtypeStructs."""
  return trainer.setup(config, devices=jax.devices()[:1]).abstract_state.params
