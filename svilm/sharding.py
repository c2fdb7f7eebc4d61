"""Device mesh and shardings: the one place the mesh rules live.

The pretraining state is replicated and the batch is split along the `data` axis. Because the
step is jitted over global `jax.Array`s, every loss sees the *global* batch (contrastive and
grounding negatives come from all devices and hosts) without explicit collectives: XLA inserts
the all-gathers. Each host feeds only its own slice of the global batch.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """A 1-d mesh over `devices` (default: all) with `config.mesh.data` devices on `data`."""
  devices = list(jax.devices() if devices is None else devices)
  data = len(devices) if config.mesh.data == -1 else config.mesh.data
  if data != len(devices):
    raise ValueError(f"mesh.data={config.mesh.data} must equal the {len(devices)} devices (or "
                     "-1); other axes arrive with model-parallel sharding")
  return Mesh(np.asarray(devices).reshape(data), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax.Arrays sharded over the data axis.

  On several hosts each contributes its `global_batch / process_count` rows.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local_batch)
