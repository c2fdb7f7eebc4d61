r"""Our Flax video-encoder train step against a PyTorch eager reference of the same encoder.

  pip install -e ".[pytorch_reference]"     # torch, CPU build; not a dependency of svilm
  python benchmarks/vs_pytorch.py --config=configs/pretrain.py [--steps=10] [--rounds=5]

Is XLA:CPU slow on our model, or is this just what the model costs on a CPU? Both sides run
the same step on the video encoder of `config.model.video` (benchmarks/pytorch_reference.py
is the same function, parameter for parameter): forward in training mode with Gumbel noise from
a per-step key/generator, loss = mean(clip_features^2) + mean(group_tokens^2), backward, AdamW
(constant config.optim learning rate, betas and weight decay, no mask, no clipping). Ours is
jitted with the state donated and synchronised with block_until_ready; theirs is eager
float32 with torch.optim.AdamW's defaults (foreach).

--check first verifies the reference: same weights (load_flax_params), same input, Gumbel
noise off: forward outputs and the gradients of a few named params must agree. Hard
assignments can flip on float near-ties between the two frameworks; if any token's argmax
differs, the check falls back to soft assignment (hard=False) and says so in `check_variant`.

Timing alternates A B A B: each of --rounds rounds times --steps steps of ours, then --steps
of PyTorch, after --warmup steps of each (compilation excluded). Reported per side: median
step ms (min, max), process CPU utilisation (process CPU time / wall time / cores, the idle
share the issue is about), minor page faults per step, and FLOP/s from XLA's FLOP count of one
step, lowered with layers unrolled and no remat. The last stdout line is a JSON object with
every figure. Like svilm.main, the script first re-executes itself with huge-page malloc
(svilm/host_memory.py), which then applies to both sides; SVILM_MALLOC_HUGEPAGES=0 runs both
without it.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Pretraining config file.", lock_config=True
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per side per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "A B rounds (ours, then PyTorch).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps per side before the rounds.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Clips per step; 0 = config.batch_size.")
_CHECK = flags.DEFINE_bool("check", True, "Verify that both sides compute the same function.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads; 0 = all cores.")
_SDPA = flags.DEFINE_bool(
  "pytorch_sdpa",
  False,
  "PyTorch attention via F.scaled_dot_product_attention (fused) instead "
  "of the same matmul-softmax-matmul ops as ours.",
)

INSTALL_HINT = (
  "benchmarks/vs_pytorch.py needs PyTorch, which svilm does not depend on: "
  'pip install -e ".[pytorch_reference]"'
)
# Forward outputs and gradients must agree to this fraction of their largest magnitude.
CHECK_RTOL = 1e-3


def _rel_diff(a, b) -> float:
  """max|a - b| / max|b| (0 when both are zero)."""
  import numpy as np

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _loss_jax(intermediates):
  import jax.numpy as jnp

  return jnp.mean(jnp.square(intermediates["clip_features"])) + jnp.mean(
    jnp.square(intermediates["group_tokens"])
  )


def _loss_torch(intermediates):
  return (
    intermediates["clip_features"].square().mean() + intermediates["group_tokens"].square().mean()
  )


def _check(video_kwargs, params, video_np, grid, hard: bool, attention: str) -> dict:
  """Gumbel-free forward + gradient of ours (float32) and the reference; returns the diffs.

  With hard=True and some assignment argmax differing between the two, returns
  {'flips': n} only (the outputs then differ for a float near-tie, not a bug).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from benchmarks import pytorch_reference
  from svilm.models import video_encoder

  # Perturb every leaf: at init all biases are 0 and LayerNorms are identities, so their
  # mapping would go untested, and mean(LN(groups)^2) would be constant (var / (var + eps)),
  # leaving the group path with a gradient of pure float noise.
  rng = np.random.default_rng(2)
  params = jax.tree.map(
    lambda p: (p + 0.02 * rng.standard_normal(p.shape)).astype(np.float32), params
  )
  kwargs = {**video_kwargs, "gumbel_noise": False, "hard_assignment": hard}
  ours = video_encoder.VideoEncoder(**kwargs, dtype=jnp.float32)
  theirs = pytorch_reference.VideoEncoder(grid, **kwargs, attention=attention)
  pytorch_reference.load_flax_params(theirs, params)
  theirs.train()

  def loss_fn(p):
    _, inter = ours.apply({"params": p}, jnp.asarray(video_np), train=True)
    return _loss_jax(inter), inter

  (_, inter), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  _, tinter = theirs(torch.from_numpy(video_np))
  flips = sum(
    int(np.sum(np.argmax(np.asarray(a), -1) != t.argmax(-1).numpy()))
    for a, t in zip(inter["assignments"], tinter["assignments"])
  )
  if hard and flips:
    return {"flips": flips}
  _loss_torch(tinter).backward()
  named = dict(theirs.named_parameters())
  result = {"flips": 0, "grads": {}}
  for key in ("clip_features", "group_tokens"):
    t = tinter[key].detach().numpy()
    result[key] = (float(np.max(np.abs(np.asarray(inter[key]) - t))), _rel_diff(inter[key], t))
  first = min(ours.resolved_grouping_layers())
  # (flax path, torch name, flax grad -> torch layout) for a few params across the model.
  picks = [
    (("embedding", "conv", "kernel"), "embedding.weight", lambda g: g.transpose(4, 3, 0, 1, 2)),
    (
      ("block_1", "attention", "query", "kernel"),
      "blocks.block_1.attention.query.weight",
      lambda g: g.reshape(g.shape[0], -1).T,
    ),
    (
      (f"grouping_{first}", "query", "kernel"),
      f"groupings.grouping_{first}.query.weight",
      lambda g: g.T,
    ),
    (("group_tokens",), "group_tokens", lambda g: g),
  ]
  for path, torch_name, to_torch in picks:
    g = functools.reduce(lambda tree, k: tree[k], path, grads)
    result["grads"][torch_name] = _rel_diff(to_torch(np.asarray(g)), named[torch_name].grad.numpy())
  return result


def _flops_per_step(make_step, video_kwargs, video_shape, dtype, tx) -> float:
  """XLA's FLOP count of one step, lowered (not compiled) with layers unrolled and no remat."""
  import jax
  import jax.numpy as jnp

  from svilm.models import video_encoder

  model = video_encoder.VideoEncoder(**video_kwargs, remat="none", scan_layers=False, dtype=dtype)
  video = jax.ShapeDtypeStruct(video_shape, jnp.float32)
  state = jax.eval_shape(lambda: _init_state(model, tx, video_shape))
  key = jax.eval_shape(lambda: jax.random.key(0))
  cost = jax.jit(make_step(model, tx)).lower(state, video, key).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _init_state(model, tx, video_shape):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  params = nn.meta.unbox(
    model.init({"params": jax.random.key(0)}, jnp.zeros(video_shape, jnp.float32), train=False)
  )["params"]
  return params, tx.init(params)


def _make_step(model, tx):
  """(params, opt_state), video, key -> new state, loss: forward (train), backward, AdamW."""
  import jax
  import optax

  def step(state, video, key):
    params, opt_state = state
    gumbel_key, dropout_key = jax.random.split(key)
    loss_fn = lambda p: _loss_jax(
      model.apply(
        {"params": p}, video, train=True, rngs={"gumbel": gumbel_key, "dropout": dropout_key}
      )[1]
    )
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return step


def _timed(run_step, steps: int) -> tuple[list[float], float, float, int]:
  """Runs `steps` steps; returns (per-step seconds, wall s, process CPU s, minor page faults)."""
  times = []
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  cpu0, wall0 = time.process_time(), time.perf_counter()
  for _ in range(steps):
    start = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - start)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
  return times, time.perf_counter() - wall0, time.process_time() - cpu0, faults


def main(argv) -> None:
  del argv
  try:
    import torch
  except ImportError:
    sys.exit(INSTALL_HINT)
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from benchmarks import pytorch_reference
  from svilm.models import video_encoder

  config = _CONFIG.value
  cores = os.cpu_count()
  torch.set_num_threads(_TORCH_THREADS.value or cores)
  batch = _BATCH_SIZE.value or config.batch_size
  data = config.data
  video_shape = (batch, data.num_frames, data.resolution, data.resolution, 3)
  video_kwargs = config.model.video.to_dict()
  video_kwargs["patch_size"] = tuple(video_kwargs["patch_size"])
  dtype = jnp.dtype(config.model.dtype)
  optim = config.optim
  print(
    f"torch {torch.__version__}: {torch.get_num_threads()} threads; jax {jax.__version__}: "
    f"{jax.device_count()} {jax.default_backend()} device(s); {cores} cores; "
    f"video {video_shape}, compute dtype {dtype.name}",
    flush=True,
  )
  if dtype != jnp.float32:
    print(f"note: ours computes in {dtype.name}, the PyTorch reference in float32", flush=True)

  model = video_encoder.VideoEncoder(
    **video_kwargs, remat=config.model.remat, scan_layers=config.model.scan_layers, dtype=dtype
  )
  grid = model.grid_shape(video_shape)
  tx = optax.adamw(optim.learning_rate, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
  state = jax.jit(functools.partial(_init_state, model, tx, video_shape))()
  params = state[0]
  if config.model.scan_layers:  # the reference loads the unscanned layout
    params = video_encoder.unstack_block_params(
      params, model.depth, model.resolved_grouping_layers()
    )
  attention = "sdpa" if _SDPA.value else "math"
  theirs = pytorch_reference.VideoEncoder(grid, **video_kwargs, attention=attention)
  pytorch_reference.load_flax_params(theirs, jax.device_get(params))
  video_np = np.random.default_rng(0).uniform(size=video_shape).astype(np.float32)

  results = {
    "batch": batch,
    "frames": data.num_frames,
    "resolution": data.resolution,
    "width": model.width,
    "depth": model.depth,
    "dtype": dtype.name,
    "cores": cores,
    "torch_threads": torch.get_num_threads(),
    "jax_devices": jax.device_count(),
    "torch_version": torch.__version__,
    "jax_version": jax.__version__,
    "pytorch_attention": attention,
    "steps": _STEPS.value,
    "rounds": _ROUNDS.value,
  }
  if _CHECK.value:
    host_params = jax.device_get(params)
    check = _check(
      video_kwargs, host_params, video_np, grid, video_kwargs["hard_assignment"], attention
    )
    variant = "hard" if video_kwargs["hard_assignment"] else "soft"
    if check["flips"]:
      variant = f"soft ({check['flips']} hard-assignment argmax flips on near-ties)"
      check = _check(video_kwargs, host_params, video_np, grid, False, attention)
    rel = max(check["clip_features"][1], check["group_tokens"][1], *check["grads"].values())
    results["max_abs_diff"] = max(check["clip_features"][0], check["group_tokens"][0])
    results["check_max_rel_diff"] = rel
    results["check_variant"] = variant
    print(
      f"check ({variant}, no Gumbel): clip_features max|diff| "
      f"{check['clip_features'][0]:.2e}, group_tokens {check['group_tokens'][0]:.2e}; "
      f"relative grad diffs { ({k: f'{v:.1e}' for k, v in check['grads'].items()}) }",
      flush=True,
    )
    if rel > CHECK_RTOL:
      sys.exit(
        f"check failed: relative difference {rel:.2e} > {CHECK_RTOL}; the reference "
        f"does not compute our function."
      )

  flops = _flops_per_step(_make_step, video_kwargs, video_shape, dtype, tx)
  step = jax.jit(_make_step(model, tx), donate_argnums=(0,))
  video = jax.device_put(video_np)
  base_key = jax.random.key(1)
  counter = {"ours": 0}

  def ours_step():
    nonlocal state
    counter["ours"] += 1
    state, _ = step(state, video, jax.random.fold_in(base_key, counter["ours"]))
    jax.block_until_ready(state)

  theirs.train()
  opt = torch.optim.AdamW(
    theirs.parameters(),
    lr=optim.learning_rate,
    betas=(optim.b1, optim.b2),
    weight_decay=optim.weight_decay,
  )
  generator = torch.Generator().manual_seed(1)
  video_t = torch.from_numpy(video_np)

  def torch_step():
    opt.zero_grad(set_to_none=True)
    _loss_torch(theirs(video_t, generator)[1]).backward()
    opt.step()

  start = time.perf_counter()
  ours_step()  # compiles
  print(f"ours: compiled + first step in {time.perf_counter() - start:.1f} s", flush=True)
  for run in (ours_step, torch_step):
    for _ in range(_WARMUP.value):
      run()
  sides = {"ours": ([], 0.0, 0.0, 0), "pytorch": ([], 0.0, 0.0, 0)}
  for r in range(_ROUNDS.value):
    for name, run in (("ours", ours_step), ("pytorch", torch_step)):
      times, wall, cpu, faults = _timed(run, _STEPS.value)
      old = sides[name]
      sides[name] = (old[0] + times, old[1] + wall, old[2] + cpu, old[3] + faults)
      print(
        f"round {r + 1}/{_ROUNDS.value} {name:8s} median {1e3 * np.median(times):8.1f} ms"
        f"  cpu {cpu / wall / cores:5.1%}",
        flush=True,
      )
  for name, (times, wall, cpu, faults) in sides.items():
    ms = 1e3 * np.asarray(times)
    results[f"{name}_step_ms"] = round(float(np.median(ms)), 2)
    results[f"{name}_step_ms_min"] = round(float(ms.min()), 2)
    results[f"{name}_step_ms_max"] = round(float(ms.max()), 2)
    results[f"{name}_cpu_util"] = round(cpu / wall / cores, 3)
    results[f"{name}_page_faults_per_step"] = round(faults / len(times), 1)
    results[f"{name}_gflop_per_s"] = round(flops / np.median(times) / 1e9, 2)
  results["ratio"] = round(results["ours_step_ms"] / results["pytorch_step_ms"], 3)
  results["flops_per_step"] = flops
  results["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
  print(
    f"ours {results['ours_step_ms']} ms ({results['ours_cpu_util']:.0%} CPU), PyTorch "
    f"{results['pytorch_step_ms']} ms ({results['pytorch_cpu_util']:.0%} CPU): ratio "
    f"{results['ratio']}; {flops / 1e9:.1f} GFLOP per step",
    flush=True,
  )
  print(json.dumps(results))


if __name__ == "__main__":
  from svilm import host_memory

  host_memory.ensure_malloc_hugepages()  # re-executes once: svilm/host_memory.py
  flags.mark_flags_as_required(["config"])
  app.run(main)
