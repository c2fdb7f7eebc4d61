"""`python -m svilm.main --config=... --compile_only`: will this config fit, before booking a pod?

Compiles the real train step (same model, optimizer, mesh and shardings as training, state
donated) for abstract inputs of the configured global batch, without reading data, building
ShapesWorld or running a step, and reports what XLA's compiled program needs per device:

  arguments   the train state and the device's slice of the batch
  outputs     the new state and the metrics
  aliased     output bytes that reuse donated argument buffers (counted once)
  temporaries activations, gradients and scratch live during the step
  peak        arguments + outputs - aliased + temporaries (XLA's own estimate; allocator
              fragmentation and runtime buffers come on top)

and the model FLOPs of one step (`model_flops_per_step`).
"""

from __future__ import annotations

import jax
import ml_collections

from svilm.trainers import train_step
from svilm.trainers import trainer


def model_flops_per_step(config: ml_collections.ConfigDict, batch_size: int | None = None) -> float:
  """FLOPs of one train step as the model defines them, from XLA's cost analysis.

  The step is lowered (not compiled) for one device with layers unrolled, no
  rematerialisation, whole (not query-chunked) attention and no gradient accumulation: XLA
  counts the body of a loop (a scan over layers, query chunks or micro-batches) once, not
  once per iteration, and recomputation is not model work
  (MFU counts model FLOPs). `config` must be finalized; `batch_size` defaults to its global
  batch.
  """
  plain = ml_collections.ConfigDict(config.to_dict())
  plain.model.scan_layers = False
  plain.model.remat = "none"
  if "attention_query_chunk" in plain.model.video:
    plain.model.video.attention_query_chunk = 0  # a loop over query chunks: counted once
  plain.optim.grad_accum_steps = 1
  plain.mesh.data, plain.mesh.fsdp, plain.mesh.model = -1, 1, 1  # one device: no sharding
  ctx = trainer.setup(plain, devices=jax.devices()[:1], process_count=1)
  batch_size = batch_size or ctx.config.batch_size

  def count() -> float:
    state = jax.eval_shape(ctx.fresh_state)
    batch = jax.eval_shape(lambda: ctx.task.dummy_batch(ctx.config, batch_size))
    step = jax.jit(
      lambda state, batch: train_step.train_step(
        state,
        batch,
        loss_fn=ctx.loss_fn,
        tx=ctx.tx,
        schedule=ctx.schedule,
        partition=ctx.partition,
        config=ctx.config,
      )
    )
    cost = step.lower(state, batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])

  # Configs that differ only in mesh, scan or remat share the plain context, and the count.
  return ctx.once(f"model_flops_per_step@{batch_size}", count)


def peak_bytes(memory) -> int:
  """Per-device peak of a compiled program from its memory_analysis(): arguments + outputs -
  aliased (donated buffers reused for outputs) + temporaries."""
  return (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
    + memory.temp_size_in_bytes
  )


def compile_train_step(config: ml_collections.ConfigDict) -> dict:
  """Compiles the train step for the configured mesh; returns sizes (bytes) and FLOPs."""
  ctx = trainer.setup(config)
  config = ctx.config
  memory = ctx.lower_train_step().compile().memory_analysis()
  report = {
    "task": config.task,
    "devices": jax.device_count(),
    "mesh": dict(ctx.mesh.shape),
    "dtype": config.model.dtype,
    "remat": config.model.remat,
    "grad_accum_steps": config.optim.grad_accum_steps,
    "platform": jax.default_backend(),
    "global_batch": config.batch_size,
    "parameters": sum(x.size for x in jax.tree.leaves(ctx.abstract_state.params)),
    "arguments": memory.argument_size_in_bytes,
    "outputs": memory.output_size_in_bytes,
    "aliased": memory.alias_size_in_bytes,
    "temporaries": memory.temp_size_in_bytes,
  }
  report["peak"] = peak_bytes(memory)
  report["flops_per_step"] = model_flops_per_step(config)
  report["flops_per_device"] = report["flops_per_step"] / report["devices"]
  return report


def format_report(report: dict) -> str:
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  return "\n".join(
    [
      f"compile_only: {report['task']} train step compiled for {report['devices']} {report['platform']} "
      f"device(s), mesh {report['mesh']}, global batch {report['global_batch']} in "
      f"{report['grad_accum_steps']} micro-batch(es), {report['parameters'] / 1e6:.1f}M "
      f"parameters, {report['dtype']} compute, remat {report['remat']}",
      f"  per device: arguments {gib(report['arguments'])}, outputs {gib(report['outputs'])} "
      f"(aliased {gib(report['aliased'])}), temporaries {gib(report['temporaries'])}",
      f"  per device peak (XLA estimate): {gib(report['peak'])}",
      f"  model FLOPs per step: {report['flops_per_step']:.3e} "
      f"({report['flops_per_device']:.3e} per device)",
    ]
  )
