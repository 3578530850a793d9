"""The device mesh, batch sharding and per-example keys for data-parallel steps.

Per-device code names the mesh axis `DATA_AXIS` and reduces with `lax.pmean`/`lax.psum`;
`jax.shard_map` maps it over the mesh (the successor of `jax.pmap`, composing with `jax.jit`).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all local devices) with axis `DATA_AXIS`."""
  return Mesh(np.array(devices if devices is not None else jax.local_devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def index_keys(rng: jax.Array, indices: jnp.ndarray) -> jax.Array:
  """One key per example: fold_in(rng, index)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


def example_keys(rng: jax.Array, step, indices: jnp.ndarray) -> jax.Array:
  """One key per example: fold_in(fold_in(rng, step), global example index).

  The noise an example gets therefore depends on (seed, step, index) only, never on how many
  devices share the batch.
  """
  return index_keys(jax.random.fold_in(rng, step), indices)
