r"""How the train step's cost grows with frames, resolution, group tokens, batch and sharding.

  python benchmarks/cost_growth.py --config=configs/pretrain.py
      [--sweeps=frames,resolution,groups,batch,mesh] [--frames=8,16,32]
      [--resolutions=64,96,128] [--groups=4,8,16,32] [--batch_sizes=16,32,64,128]
      [--meshes=8x1x1,1x8x1,4x1x2,2x2x2] [--steps=20] [--warmup=3] [--repeats=5]

One-factor sweeps: each varies one knob of the config (data.num_frames, data.resolution,
model.video.num_groups, batch_size) while the rest stay at the config's values. Every point is
timed by benchmarks/train_step.py's `time_train_step` (the real jitted step on a fixed random
batch, on all devices of this process; --config/--steps/--warmup/--repeats/--vocab_size are
that module's flags) and reports the step time median (min-max), model FLOPs (XLA's count,
`compile_check.model_flops_per_step`), XLA's per-device peak memory estimate and the number of
video tokens N = (frames/p_t)(resolution/p_h)(resolution/p_w). Each sweep's points are measured
back to back (the config's own point again in every sweep), so the ratios within a sweep share
the machine's load; the table's cpu column (process CPU time / wall / cores) shows that load.

Growth between a sweep's smallest and largest point is the exponent k of y ~ x^k,
k = log(y1/y0) / log(x1/x0), for time, FLOPs and memory; exponents above
--superlinear_exponent (1.15) are marked super-linear. x is the number of video tokens for the
frames and resolution sweeps (tokens grow as resolution^2, so per-resolution exponents are twice
these), the number of group tokens and the batch size for the other two.

Which parts grow super-linearly, measured rather than guessed. XLA's FLOP count is split into
the three parts whose cost is a product of two sizes the sweeps grow (N.N, N.M, B.B), each an
exact matmul formula (fwd + bwd = 3 x the forward matmuls: both operands of each need gradients):
  video_attention   scores q.k^T and weights.v of every video block: 12 L B N^2 D
  grouping          assignment logits and weighted pooling of every grouping block: 12 G B N M D
  batch_similarity  contrastive logits [B, B] and grounding cosines [B, K, B, M]:
                    6 B^2 E (1 + K M)
(L video depth, D width, G grouping blocks, M groups, E joint width, K nouns per caption), and
rest = XLA's total - these, which is linear in N and B (projections and MLPs, O(N D^2); the
tubelet embedding, text tower, losses' elementwise work, AdamW). The formulas count matmuls
only; XLA also counts the softmax's elementwise FLOPs, so its quadratic terms are 1 to 3
percent larger (tests/test_cost_growth.py checks both formulas against XLA's second
differences). Sweeps with three or more points also fit XLA's totals with a + b x + c x^2 and
report c x^2 at the largest point beside the formula's value: the measured quadratic part.

The mesh sweep runs in a subprocess of this script with XLA_FLAGS
--xla_force_host_platform_device_count=--mesh_devices (fake CPU devices; the flag must be set
before JAX starts). Each --meshes entry is data x fsdp x model (DP8, FSDP8, DP4xTP2,
DP2xFSDP2xTP2 by default). Per point: step time, per-device peak memory, and the collective
traffic of the compiled step: `collective_bytes` over `compiled.as_text()`, the result bytes of
every all-gather / reduce-scatter / all-reduce / all-to-all / collective-permute per device,
summed per kind (static: an op inside a loop counts once; the default configs have no loop).
XLA:CPU forms no reduce-scatter: FSDP gradients are all-reduced and then sliced. The fake
devices share this machine's cores, so mesh step times measure overhead, not scaling.

The last line of stdout is one JSON object:
  {"sweeps": {name: [point, ...]}, "growth": {name: {...}}, "mesh": [point, ...], "notes": [...]}
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import train_step  # noqa: E402  (defines --config, --steps, --warmup, ...)

SWEEPS = ("frames", "resolution", "groups", "batch", "mesh")
_SWEEPS = flags.DEFINE_list("sweeps", list(SWEEPS), f"Which of {SWEEPS} to run.")
_FRAMES = flags.DEFINE_list("frames", ["8", "16", "32"], "data.num_frames values.")
_RESOLUTIONS = flags.DEFINE_list("resolutions", ["64", "96", "128"], "data.resolution values.")
_GROUPS = flags.DEFINE_list("groups", ["4", "8", "16", "32"], "model.video.num_groups values.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16", "32", "64", "128"], "batch_size values.")
_MESHES = flags.DEFINE_list(
  "meshes",
  ["8x1x1", "1x8x1", "4x1x2", "2x2x2"],
  "Meshes of the mesh sweep, each data x fsdp x model.",
)
_MESH_DEVICES = flags.DEFINE_integer("mesh_devices", 8, "Fake CPU devices of the mesh sweep.")
_SUPERLINEAR = flags.DEFINE_float(
  "superlinear_exponent", 1.15, "Growth exponents above this are marked super-linear."
)
_MESH_WORKER = flags.DEFINE_bool("mesh_worker", False, "Internal: run the mesh sweep here.")

# sweep -> (config key it sets, the flag holding its values, the growth variable x).
KNOBS = {
  "frames": ("data.num_frames", _FRAMES, "video_tokens"),
  "resolution": ("data.resolution", _RESOLUTIONS, "video_tokens"),
  "groups": ("model.video.num_groups", _GROUPS, "num_groups"),
  "batch": ("batch_size", _BATCH_SIZES, "batch_size"),
}
PARTS = ("video_attention", "grouping", "batch_similarity")
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
MESH_NOTE = (
  "mesh sweep: fake XLA:CPU devices share this machine's cores, so its step times "
  "measure partitioning and collective overhead, not scaling"
)


def video_tokens(config) -> int:
  """N = (num_frames / p_t) * (resolution / p_h) * (resolution / p_w)."""
  p_t, p_h, p_w = config.model.video.patch_size
  res = config.data.resolution
  return (config.data.num_frames // p_t) * (res // p_h) * (res // p_w)


def analytic_flops(config) -> dict[str, float]:
  """Matmul FLOPs of one train step (fwd + bwd) of the parts not linear in N or B.

  With B = batch_size, N = video_tokens, D / L = video width / depth, G = grouping blocks,
  M = num_groups, E = embed_dim, K = data.num_nouns:
    video_attention  = 3 * L * 2 * (2 B N^2 D)        q.k^T and weights.v, all heads together
    grouping         = 3 * G * 2 * (2 B N M D)        logits k.q and pooling A^T.v
    batch_similarity = 3 * (2 B^2 E + 2 B^2 K M E)    contrastive and grounding similarities
  """
  video = config.model.video
  b, n, d, m = config.batch_size, video_tokens(config), video.width, video.num_groups
  return {
    "video_attention": 12.0 * video.depth * b * n * n * d,
    "grouping": 12.0 * len(video.grouping_layers) * b * n * m * d,
    "batch_similarity": 6.0 * b * b * config.model.embed_dim * (1 + config.data.num_nouns * m),
  }


def growth_exponent(x0: float, x1: float, y0: float, y1: float) -> float | None:
  """k with y1 / y0 = (x1 / x0)^k; None when undefined (equal x or a non-positive value)."""
  if x0 <= 0 or x1 <= 0 or y0 <= 0 or y1 <= 0 or x0 == x1:
    return None
  return math.log(y1 / y0) / math.log(x1 / x0)


def _result_bytes(result_type: str) -> int:
  """Bytes of an HLO result type: 'f32[8,16]{1,0}' or a tuple '(f32[2]{0}, bf16[3,4]{1,0})'."""
  total = 0
  for dtype, dims in re.findall(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]", result_type):
    # The first number of the type name is its width in bits (s8, bf16, f32, c64, f8e4m3fn);
    # pred is a byte; token[] and other opaque types carry no data.
    width = re.search(r"\d+", dtype)
    bits = 8 if dtype == "pred" else int(width.group()) if width else 0
    total += math.prod(int(x) for x in dims.split(",") if x) * bits // 8
  return total


def collective_bytes(hlo_text: str) -> dict[str, dict[str, int]]:
  """Collective ops of an HLO module text: {kind: {'ops': count, 'bytes': result bytes}}.

  kind is each of COLLECTIVES; bytes is the sum over its instructions of the result size (for a
  partitioned program: per device). Async pairs count once, at their '-done' instruction (whose
  result is the collective's; a '-start' result also holds the operand). Each instruction is
  counted once however often it runs (an op inside a while loop counts once).
  """
  found = {kind: {"ops": 0, "bytes": 0} for kind in COLLECTIVES}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT\s+)?%?[^\s=]+\s*=\s*(.*)", line)
    if not match:
      continue
    rhs = match.group(1)
    if rhs.startswith("("):  # a tuple result type: up to its matching parenthesis
      depth = 0
      for end, char in enumerate(rhs):  # noqa: B007 (end is read after the loop)
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
          break
      result_type, rest = rhs[: end + 1], rhs[end + 1 :]
    else:
      result_type, _, rest = rhs.partition(" ")
    opcode = rest.strip().split("(", 1)[0].strip()
    kind = opcode[: -len("-done")] if opcode.endswith("-done") else opcode
    if kind in found:
      found[kind]["ops"] += 1
      found[kind]["bytes"] += _result_bytes(result_type)
  return found


def point_config(config, key: str, value):
  """A copy of the raw `config` with the dotted `key` (e.g. 'data.num_frames') set to `value`."""
  import ml_collections

  config = ml_collections.ConfigDict(config.to_dict())
  *path, last = key.split(".")
  node = config
  for name in path:
    node = node[name]
  node[last] = value
  return config


def finalize(config, num_devices: int):
  """configuration.finalize for one process; the vocabulary from --vocab_size if unset."""
  from svilm import configuration

  text = config.model.text.vocab_size
  return configuration.finalize(
    config,
    num_devices=num_devices,
    process_count=1,
    vocab_size=text if text != -1 else flags.FLAGS.vocab_size,
  )


def measure(config) -> dict:
  """time_train_step's figures for a finalized config, with tokens and the FLOP parts."""
  timed = train_step.time_train_step(
    config, steps=flags.FLAGS.steps, warmup=flags.FLAGS.warmup, repeats=flags.FLAGS.repeats
  )
  parts = analytic_flops(config)
  parts["rest"] = timed["flops_per_step"] - sum(parts.values())
  keep = (
    "step_time_ms",
    "step_time_min_ms",
    "step_time_max_ms",
    "flops_per_step",
    "peak_memory_bytes",
    "compile_s",
    "devices",
  )
  return {
    "frames": config.data.num_frames,
    "resolution": config.data.resolution,
    "num_groups": config.model.video.num_groups,
    "batch_size": config.batch_size,
    "video_tokens": video_tokens(config),
    **{k: timed[k] for k in keep},
    # Below the machine's cores when other processes compete (CPU only).
    "cpu_utilisation": timed.get("cpu_utilisation"),
    "flops_parts": parts,
  }


def growth(points: list[dict], x_key: str, threshold: float) -> dict:
  """Exponents of time, FLOPs, memory and each FLOP part from the first to the last point."""
  first, last = points[0], points[-1]
  x0, x1 = first[x_key], last[x_key]
  result = {"x": x_key, "from": x0, "to": x1}
  for name, key in (
    ("time", "step_time_ms"),
    ("flops", "flops_per_step"),
    ("memory", "peak_memory_bytes"),
  ):
    result[f"{name}_exponent"] = growth_exponent(x0, x1, first[key], last[key])
  result["part_exponents"] = {
    part: growth_exponent(x0, x1, first["flops_parts"][part], last["flops_parts"][part])
    for part in (*PARTS, "rest")
  }
  result["super_linear"] = [
    name for name in ("time", "flops", "memory") if (result[f"{name}_exponent"] or 0) > threshold
  ]
  if len(points) >= 3:
    import numpy as np

    xs = np.array([p[x_key] for p in points], float)
    c = np.polyfit(xs, [p["flops_per_step"] for p in points], 2)[0]
    # The formula's x^2 part at the largest point (the groups sweep has none).
    analytic = {
      "video_tokens": last["flops_parts"]["video_attention"],
      "batch_size": last["flops_parts"]["batch_similarity"],
    }.get(x_key, 0.0)
    result["quadratic_fit"] = {"measured": float(c * x1 * x1), "analytic": analytic}
  return result


def run_sweeps(config, names, threshold: float) -> tuple[dict, dict]:
  """({sweep: points}, {sweep: growth}) for the one-factor sweeps `names` of raw `config`."""
  import jax

  sweeps, growths = {}, {}
  for name in names:
    points = []
    for value in sorted(int(v) for v in KNOBS[name][1].value):
      point = finalize(point_config(config, KNOBS[name][0], value), jax.device_count())
      points.append({"value": value, **measure(point)})
    sweeps[name] = points
    growths[name] = growth(points, KNOBS[name][2], threshold)
  return sweeps, growths


def mesh_name(data: int, fsdp: int, model: int) -> str:
  """'DP8', 'FSDP8', 'DP4xTP2', 'DP2xFSDP2xTP2' ... (size-1 axes left out)."""
  parts = [f"{a}{s}" for a, s in (("DP", data), ("FSDP", fsdp), ("TP", model)) if s > 1]
  return "x".join(parts) or "1 device"


def compiled_step_text(config) -> str:
  """HLO text of the train step compiled for `config`'s mesh (abstract inputs, no data)."""
  from svilm.trainers import trainer

  lowered = trainer.setup(config).lower_train_step()
  # Only the HLO is read, so LLVM may skip its optimisations (the collectives are placed by
  # the HLO passes before it). time_train_step compiles the same program again for timing. A
  # persistent compilation cache could share one executable; not used, because the one run
  # with it aborted in an all-gather rendezvous on the DP8 mesh (cause not established).
  return lowered.compile(
    {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  ).as_text()


def run_mesh_points(config) -> list[dict]:
  """The mesh sweep, in a process that already has --mesh_devices devices."""
  import jax

  if jax.device_count() != _MESH_DEVICES.value:
    raise RuntimeError(
      f"The mesh sweep needs {_MESH_DEVICES.value} devices, this process has {jax.device_count()}"
    )
  points = []
  for spec in _MESHES.value:
    data, fsdp, model = (int(s) for s in spec.split("x"))
    point = point_config(config, "mesh.data", data)
    point.mesh.fsdp, point.mesh.model = fsdp, model
    point = finalize(point, jax.device_count())
    collectives = collective_bytes(compiled_step_text(point))
    timed = measure(point)
    points.append(
      {
        "mesh": mesh_name(data, fsdp, model),
        "data": data,
        "fsdp": fsdp,
        "model": model,
        **{
          k: timed[k]
          for k in (
            "step_time_ms",
            "step_time_min_ms",
            "step_time_max_ms",
            "peak_memory_bytes",
            "compile_s",
            "devices",
            "batch_size",
            "cpu_utilisation",
          )
        },
        "collectives": collectives,
        "collective_bytes_total": sum(c["bytes"] for c in collectives.values()),
      }
    )
  return points


def run_mesh_subprocess() -> list[dict]:
  """Runs this script with --mesh_worker under --mesh_devices fake CPU devices."""
  env = dict(os.environ)
  xla = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{xla} --xla_force_host_platform_device_count={_MESH_DEVICES.value}"
  cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--mesh_worker"]
  # stderr passes through (progress, compiler warnings); stdout ends in the points' JSON.
  result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
  if result.returncode:
    raise RuntimeError(
      f"The mesh sweep subprocess failed ({result.returncode}): {result.stdout[-2000:]}"
    )
  return json.loads(result.stdout.strip().splitlines()[-1])


def format_tables(sweeps: dict, growths: dict, mesh: list[dict]) -> str:
  """The human-readable report: one table per sweep with its growth lines, then the meshes."""
  mib = lambda n: f"{n / 2**20:.0f}"
  ms = lambda p: (
    f"{p['step_time_ms']:.1f} ({p['step_time_min_ms']:.1f}-{p['step_time_max_ms']:.1f})"
  )
  lines = []
  for name, points in sweeps.items():
    lines += [
      f"\n{name} sweep ({KNOBS[name][0]}; {points[0]['devices']} device(s))",
      f"{'value':>6} {'tokens':>7} {'step ms median (min-max)':>26} {'GFLOP':>8} "
      f"{'attn%':>6} {'group%':>6} {'B^2%':>6} {'peak MiB':>9} {'cpu':>5}",
    ]
    for p in points:
      share = {k: 100 * v / p["flops_per_step"] for k, v in p["flops_parts"].items()}
      lines.append(
        f"{p['value']:>6} {p['video_tokens']:>7} {ms(p):>26} "
        f"{p['flops_per_step'] / 1e9:>8.2f} {share['video_attention']:>6.1f} "
        f"{share['grouping']:>6.1f} {share['batch_similarity']:>6.2f} "
        f"{mib(p['peak_memory_bytes']):>9} {p['cpu_utilisation'] or 0:>5.0%}"
      )
    g = growths[name]
    fmt = lambda k: "n/a" if k is None else f"{k:.2f}"
    parts = ", ".join(f"{k} {fmt(v)}" for k, v in g["part_exponents"].items())
    lines.append(
      f"  growth in {g['x']} {g['from']}->{g['to']}: time x^{fmt(g['time_exponent'])}, "
      f"FLOPs x^{fmt(g['flops_exponent'])}, memory x^{fmt(g['memory_exponent'])}; "
      f"super-linear: {', '.join(g['super_linear']) or 'none'}"
    )
    lines.append(f"  FLOP parts x^k: {parts}")
    if "quadratic_fit" in g:
      fit = g["quadratic_fit"]
      total = points[-1]["flops_per_step"]
      lines.append(
        f"  x^2 part at the largest point: fitted to XLA's counts "
        f"{fit['measured'] / 1e9:.3f} GFLOP ({100 * fit['measured'] / total:.1f}%), "
        f"formula {fit['analytic'] / 1e9:.3f} ({100 * fit['analytic'] / total:.1f}%)"
      )
  if mesh:
    lines += [
      f"\nmesh sweep ({mesh[0]['devices']} devices, batch {mesh[0]['batch_size']}; "
      "collectives: result MiB per device (ops))",
      f"note: {MESH_NOTE}",
      f"{'mesh':>14} {'step ms median (min-max)':>26} {'cpu':>5} {'peak MiB/dev':>12} "
      + " ".join(f"{k:>20}" for k in COLLECTIVES),
    ]
    for p in mesh:
      traffic = " ".join(
        f"{c['bytes'] / 2**20:>13.2f} ({c['ops']:>4})"
        for c in (p["collectives"][k] for k in COLLECTIVES)
      )
      lines.append(
        f"{p['mesh']:>14} {ms(p):>26} {p['cpu_utilisation'] or 0:>5.0%} "
        f"{mib(p['peak_memory_bytes']):>12} {traffic}"
      )
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  config = flags.FLAGS.config
  unknown = set(_SWEEPS.value) - set(SWEEPS)
  if unknown:
    raise app.UsageError(f"Unknown sweeps {sorted(unknown)}; known: {SWEEPS}")
  if _MESH_WORKER.value:
    print(json.dumps(run_mesh_points(config)))
    return
  names = [s for s in _SWEEPS.value if s != "mesh"]
  sweeps, growths = run_sweeps(config, names, _SUPERLINEAR.value)
  mesh = run_mesh_subprocess() if "mesh" in _SWEEPS.value else []
  print(format_tables(sweeps, growths, mesh), flush=True)
  notes = [MESH_NOTE] if mesh else []
  print(json.dumps({"sweeps": sweeps, "growth": growths, "mesh": mesh, "notes": notes}))


if __name__ == "__main__":
  from svilm import host_memory

  host_memory.ensure_malloc_hugepages()  # re-executes once: svilm/host_memory.py
  app.run(main)
