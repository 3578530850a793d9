"""The device mesh and shardings of data-parallel steps, and a bound on queued dispatches.

Per-device code names the mesh axis `DATA_AXIS` and reduces with `lax.pmean`/`lax.psum` (or
`DATA_COLLECTIVES`); `jax.shard_map` maps it over the mesh (the successor of `jax.pmap`, composing
with `jax.jit`).
"""

import collections
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_jax.collectives import over_axis

DATA_AXIS = "data"
DATA_COLLECTIVES = over_axis(DATA_AXIS)
"""Global-batch reductions over the data axis, for code inside `shard_map`."""


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every process's devices) with axis `DATA_AXIS`.

  `jax.devices()` lists each process's devices together, so every process holds one contiguous
  block of the global batch's rows.
  """
  return Mesh(np.array(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def is_primary() -> bool:
  """Whether this is the process that writes a run's files (process 0)."""
  return jax.process_index() == 0


def local_block(sharding: jax.sharding.Sharding, shape: tuple[int, ...]) -> tuple[slice, ...]:
  """The block of a global array of `shape` that this process's devices hold (a slice per axis)."""
  starts, stops = [], []
  for index in sharding.addressable_devices_indices_map(shape).values():
    bounds = [s.indices(n)[:2] for s, n in zip(index, shape, strict=True)]
    starts.append([lo for lo, _ in bounds])
    stops.append([hi for _, hi in bounds])
  lows, highs = np.min(starts, 0), np.max(stops, 0)
  return tuple(slice(int(a), int(b)) for a, b in zip(lows, highs, strict=True))


def put(tree, sharding: jax.sharding.Sharding):
  """Host arrays (the same global values on every process) as global arrays with `sharding`.

  One process: `jax.device_put`. Several: each process hands only the block its devices hold to
  `jax.make_array_from_process_local_data`.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    local = x[local_block(sharding, x.shape)]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)

  return jax.tree.map(one, tree)


def put_rows(tree, sharding: jax.sharding.Sharding, global_rows: int, axis: int = 0):
  """This process's rows of a global batch of `global_rows` (split on `axis`) as global arrays.

  The rows are those of `rows(sharding, ...)`; one process holds them all.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    x = np.asarray(x)
    shape = x.shape[:axis] + (global_rows,) + x.shape[axis + 1 :]
    return jax.make_array_from_process_local_data(sharding, x, shape)

  return jax.tree.map(one, tree)


def rows(sharding: jax.sharding.Sharding, global_rows: int, axis: int = 0) -> slice:
  """The rows of a global batch (split on `axis` of an array of that rank) this process holds."""
  shape = (1,) * axis + (global_rows,)
  return local_block(sharding, shape)[axis]


def fetch(tree):
  """Global arrays as host numpy arrays (gathered from every process when they are split)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)


def split_batch_size(size: int, num_devices: int, field: str) -> int:
  """An evaluation batch size rounded up to a multiple of the devices (padding is masked).

  Evaluation numbers do not depend on the batch size, so `size` may be anything; the change is
  logged once per field.
  """
  rounded = -(-size // num_devices) * num_devices
  if rounded != size and (field, size, num_devices) not in _ROUNDED:
    _ROUNDED.add((field, size, num_devices))
    logging.info(
      "%s=%d rounded up to %d to split over %d devices.", field, size, rounded, num_devices
    )
  return rounded


_ROUNDED: set = set()


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def stacked_batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of global batches stacked on a leading (step) axis: the batch axis is split."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


class DispatchWindow:
  """Keeps at most `size` dispatched computations unfinished: `add` waits for the oldest beyond.

  JAX dispatches asynchronously, so a loop can queue steps far ahead of the device. XLA:CPU
  (jaxlib 0.10) then stalls in the cross-device all-reduce of a multi-device step once about 32
  are queued (reproduced with two simulated devices and a bare `lax.pmean`; the run aborts after
  40 s). A few queued steps already hide the dispatch latency, so the window costs no speed.
  """

  def __init__(self, size: int = 8):
    self.size = size
    self._pending = collections.deque()

  def add(self, output: Any) -> None:
    """Records a computation by one of its (small, non-donated) outputs."""
    self._pending.append(output)
    if len(self._pending) > self.size:
      jax.block_until_ready(self._pending.popleft())
