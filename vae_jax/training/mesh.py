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
  """A 1-D mesh over `devices` (default: all local devices) with axis `DATA_AXIS`."""
  return Mesh(np.array(devices if devices is not None else jax.local_devices()), (DATA_AXIS,))


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
