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

and the FLOPs of one step from XLA's cost analysis of the per-device program, times the
number of devices.
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections

from data_pipelines import tokenizer as tokenizer_lib
from svilm import configuration
from svilm import sharding
from svilm.trainers import pretrain


def vocab_size_without_data(config: ml_collections.ConfigDict) -> int:
  """The vocabulary size from model.text.vocab_size, else from an existing data.tokenizer."""
  if config.model.text.vocab_size != -1:
    return config.model.text.vocab_size
  path = os.path.expanduser(config.data.tokenizer)
  if config.data.tokenizer and os.path.exists(path):
    return tokenizer_lib.Tokenizer(path).vocab_size
  raise configuration.ConfigError(
      "--compile_only reads no data, so it needs the text vocabulary size: pass "
      "--config.model.text.vocab_size=N (e.g. 30522 for a BERT vocabulary), or point "
      "data.tokenizer at an existing sentencepiece model")


def compile_train_step(config: ml_collections.ConfigDict) -> dict:
  """Compiles the train step for the configured mesh; returns sizes (bytes) and FLOPs."""
  config = configuration.finalize(config, num_devices=jax.device_count(),
                                  process_count=jax.process_count(),
                                  vocab_size=vocab_size_without_data(config))
  mesh = sharding.make_mesh(config)
  model = pretrain.build_model(config)
  tx, schedule = pretrain.make_optimizer(config)
  state_sharding, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  abstract = lambda tree, where: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), tree)
  state = abstract(jax.eval_shape(functools.partial(pretrain.init_state, model, tx, config)),
                   state_sharding)
  batch = abstract(jax.eval_shape(lambda: pretrain.dummy_batch(config, config.batch_size)),
                   batch_sharding)
  step = pretrain.jit_train_step(config, model, tx, schedule, mesh)
  compiled = step.lower(state, batch).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report = {
      "devices": jax.device_count(),
      "platform": jax.default_backend(),
      "global_batch": config.batch_size,
      "parameters": sum(x.size for x in jax.tree.leaves(state.params)),
      "arguments": memory.argument_size_in_bytes,
      "outputs": memory.output_size_in_bytes,
      "aliased": memory.alias_size_in_bytes,
      "temporaries": memory.temp_size_in_bytes,
      "flops_per_device": float(cost.get("flops", 0.0)),
  }
  report["peak"] = (report["arguments"] + report["outputs"] - report["aliased"]
                    + report["temporaries"])
  report["flops_per_step"] = report["flops_per_device"] * report["devices"]
  return report


def format_report(report: dict) -> str:
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  return "\n".join([
      f"compile_only: train step compiled for {report['devices']} {report['platform']} "
      f"device(s), global batch {report['global_batch']}, "
      f"{report['parameters'] / 1e6:.1f}M parameters",
      f"  per device: arguments {gib(report['arguments'])}, outputs {gib(report['outputs'])} "
      f"(aliased {gib(report['aliased'])}), temporaries {gib(report['temporaries'])}",
      f"  per device peak (XLA estimate): {gib(report['peak'])}",
      f"  FLOPs per step: {report['flops_per_step']:.3e} "
      f"({report['flops_per_device']:.3e} per device)",
  ])
