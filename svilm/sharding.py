"""Device mesh and shardings: the one place the mesh rules live.

The mesh has three named axes, sized by `config.mesh`:

  data   pure data parallelism: the batch is split, parameters are replicated;
  fsdp   fully-sharded data parallelism: the batch is split *and* parameters and optimizer
         state are sharded along their 'embed' dimension (gathered per layer by XLA);
  model  tensor parallelism: attention heads, MLP hidden units and the vocabulary are split,
         and the batch is replicated across this axis.

Which tensor dimension goes to which mesh axis is decided by logical-axis rules
(`config.mesh.rules`, pairs of (logical name, mesh axis or axes or None)) applied to the logical
names the model gives each parameter dimension ('embed', 'mlp', 'heads', 'kv', 'vocab',
'groups', 'layers'; see svilm/models/vit.py). A dimension whose size is not divisible by its
mesh axes stays replicated (e.g. 4 heads on an 8-way model axis), so every config runs on every
mesh; the optimizer state follows its parameter.

Data parallel, FSDP and DP x TP are therefore one code path: the defaults (fsdp=1, model=1)
make every rule map to a size-1 axis, i.e. plain data parallelism.

Because the step is jitted over global `jax.Array`s, every loss sees the *global* batch
(contrastive and grounding negatives come from all devices and hosts) without explicit
collectives: XLA inserts them. Each host feeds only its own slice of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

DATA_AXIS, FSDP_AXIS, MODEL_AXIS = "data", "fsdp", "model"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, MODEL_AXIS)
# The mesh axes the batch dimension is split over (the data-parallel axes).
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)

# Logical parameter axis -> mesh axis. 'embed' is the FSDP dimension (present in every matrix);
# heads, MLP hidden units and the vocabulary are the Megatron-style tensor-parallel dimensions.
DEFAULT_RULES = (
  ("batch", BATCH_AXES),  # activations only (svilm/models/layers.py TOKEN_AXES)
  ("embed", FSDP_AXIS),
  ("mlp", MODEL_AXIS),
  ("heads", MODEL_AXIS),
  ("vocab", MODEL_AXIS),
  ("kv", None),
  ("groups", None),
  ("layers", None),
)


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, model) sizes for `num_devices`; one entry may be -1 (= the rest).

  Raises ValueError naming the keys when the sizes cannot multiply to `num_devices`.
  """
  sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.model]
  keys = ", ".join(f"mesh.{a}={s}" for a, s in zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"{keys}: each must be a positive size, and at most one may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{keys}: {num_devices} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"{keys}: the mesh has {math.prod(sizes)} devices but there are "
      f"{num_devices} (use -1 for one axis to take the rest)"
    )
  return tuple(sizes)


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """The (data, fsdp, model) mesh over `devices` (default: all of them).

  Devices are laid out by `jax.make_mesh` (topology-aware on TPU) with `model` the fastest
  varying axis, so tensor-parallel groups are neighbours (same host, fastest links). Axis types
  are Auto: XLA propagates shardings from the inputs and parameters.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(config, len(devices))
  mesh = jax.make_mesh(
    shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )
  if not _hosts_partition_the_batch(mesh):
    raise ValueError(
      f"The {dict(mesh.shape)} mesh does not give each process a contiguous "
      "block of the batch (to_global needs that); reorder the devices"
    )
  return mesh


def rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  """The logical-axis rules of `config.mesh.rules` as a tuple of (name, mesh axes) pairs."""
  return tuple(
    (name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in config.mesh.rules
  )


class MeshJit:
  """A jitted function traced and called under `mesh` and the logical rules, so the model's
  activation constraints (`nn.with_logical_constraint`) apply; without this context they are
  no-ops. `lower` is there for compile-only checks."""

  def __init__(self, jitted, mesh: Mesh, logical_rules):
    self._jitted, self._mesh, self._rules = jitted, mesh, logical_rules

  def _context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self._mesh))
    stack.enter_context(nn.logical_axis_rules(self._rules))
    return stack

  def __call__(self, *args):
    with self._context():
      return self._jitted(*args)

  def lower(self, *args):
    with self._context():
      return self._jitted.lower(*args)


def jit_evaluation(fn, config, mesh: Mesh, params_shardings, batch_args: Sequence[bool]) -> MeshJit:
  """`fn(params, *args)` jitted for evaluation: params on their shardings, each arg split over
  the batch where `batch_args` says True (else left to jit), the output replicated on every
  device (the evaluators gather it on the host); run under the mesh and the logical rules."""
  in_shardings = (params_shardings,) + tuple(
    batch_sharding(mesh) if split else None for split in batch_args
  )
  jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=replicated(mesh))
  return MeshJit(jitted, mesh, rules(config))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def traced_batch_shards() -> int:
  """`batch_shards` of the mesh in effect while a function is traced (jax.set_mesh, as
  MeshJit sets it); 1 outside a mesh. Lets a loss draw within each device's part of the batch
  (local cut-and-paste) without being told the mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
  """Number of pieces the batch is split into (data x fsdp)."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def _effective(axes, size: int, mesh: Mesh):
  """`axes` without size-1 mesh axes, or None if the dimension stays whole (also when `size`
  is not divisible by the remaining axes)."""
  if axes is None:
    return None
  axes = [a for a in ((axes,) if isinstance(axes, str) else axes) if mesh.shape[a] > 1]
  if not axes or size % math.prod(mesh.shape[a] for a in axes):
    return None
  return axes[0] if len(axes) == 1 else tuple(axes)


def spec_for(
  logical: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh, logical_rules
) -> P:
  """The PartitionSpec of one array: its logical names mapped by the rules, except that a
  dimension not divisible by its mesh axes stays replicated (size-1 axes are left out)."""
  if not logical:
    return P()
  mesh_axes = nn.logical_to_mesh_axes(tuple(logical), logical_rules)
  return P(*(_effective(axes, size, mesh) for axes, size in zip(mesh_axes, shape)))


def param_shardings(abstract_params: Any, logical_specs: Any, mesh: Mesh, logical_rules) -> Any:
  """NamedShardings for a params tree from its logical specs (`nn.get_partition_spec`)."""
  return jax.tree.map(
    lambda x, spec: NamedSharding(mesh, spec_for(spec, x.shape, mesh, logical_rules)),
    abstract_params,
    logical_specs,
    is_leaf=lambda x: isinstance(x, P) or x is None,
  )


def _dict_suffix(path) -> tuple[str, ...]:
  """The trailing run of dict keys of a tree path: a parameter's name inside optimizer state."""
  keys = []
  for entry in reversed(path):
    if not isinstance(entry, jax.tree_util.DictKey):
      break
    keys.append(entry.key)
  return tuple(reversed(keys))


def state_shardings(abstract_state: Any, params_shardings: Any, mesh: Mesh) -> Any:
  """Shardings for a whole train state: `params` as given; every optimizer-state leaf that
  mirrors a parameter (Adam's moments: same name path and shape) like that parameter; all
  other leaves (step, counters, RNG) replicated."""
  by_name = {}
  for path, sharding in jax.tree_util.tree_flatten_with_path(params_shardings)[0]:
    by_name[_dict_suffix(path)] = sharding
  shapes = {
    _dict_suffix(path): x.shape
    for path, x in jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
  }

  def leaf_sharding(path, x):
    name = _dict_suffix(path)
    if name in by_name and shapes[name] == x.shape:
      return by_name[name]
    return replicated(mesh)

  shardings = jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)
  return shardings.replace(params=params_shardings)


def with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `abstract_tree` (shapes, dtypes) placed on `shardings` (same tree):
  what restoring a checkpoint and lowering a step for given shardings both take."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings
  )


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax.Arrays sharded over the data-parallel axes.

  On several hosts each contributes its `global_batch / process_count` consecutive rows, in
  process order (configuration.finalize keeps the model axis inside a host, so the hosts
  partition the batch).
  """
  sharding = batch_sharding(mesh)
  processes = jax.process_count()
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(
      sharding, x, (x.shape[0] * processes, *x.shape[1:])
    ),
    local_batch,
  )


def check_mesh_fits_hosts(mesh_sizes: Sequence[int], num_devices: int, process_count: int) -> None:
  """Raises ValueError unless each host holds whole tensor-parallel groups.

  The hosts split the global batch between them, which only works if no model-axis group
  spans two hosts (and tensor parallelism across hosts would be slow anyway).
  """
  model = mesh_sizes[-1]
  local = num_devices // process_count
  if local % model:
    raise ValueError(
      f"mesh.model={model} does not divide the {local} devices of each host: "
      "a tensor-parallel group must sit inside one host"
    )


def _hosts_partition_the_batch(mesh: Mesh) -> bool:
  """True if every batch shard sits on one process and processes come in order."""
  ids = np.vectorize(lambda d: d.process_index)(mesh.devices)
  by_shard = ids.reshape(batch_shards(mesh), -1)
  return bool((by_shard == by_shard[:, :1]).all() and (np.diff(by_shard[:, 0]) >= 0).all())
