"""The device mesh, batch sharding and per-example keys for data-parallel steps.

Per-device code names the mesh axis `DATA_AXIS` and reduces with `lax.pmean`/`lax.psum`;
`jax.shard_map` maps it over the mesh (the successor of `jax.pmap`, composing with `jax.jit`).
"""

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
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


def stacked_batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of global batches stacked on a leading (step) axis: the batch axis is split."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def run_keys(seed: int) -> dict[str, jax.Array]:
  """A run's keys, all from `config.seed`: 'init', 'train', 'eval' and 'sample'."""
  keys = jax.random.split(jax.random.key(seed), 4)
  return dict(zip(("init", "train", "eval", "sample"), keys, strict=True))


def index_keys(rng: jax.Array, indices: jnp.ndarray) -> jax.Array:
  """One key per example: fold_in(rng, index)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


def example_keys(rng: jax.Array, step, indices: jnp.ndarray) -> jax.Array:
  """One key per example: fold_in(fold_in(rng, step), global example index).

  The noise an example gets therefore depends on (seed, step, index) only, never on how many
  devices share the batch.
  """
  return index_keys(jax.random.fold_in(rng, step), indices)


_BATCH_INDEX = 2**31 - 1  # An example index no batch reaches: keys for batch-level randomness.


def batch_key(rng: jax.Array, step) -> jax.Array:
  """One key per step for randomness over the whole batch (e.g. a permutation across examples)."""
  return jax.random.fold_in(jax.random.fold_in(rng, step), _BATCH_INDEX)


@dataclasses.dataclass(frozen=True)
class Collectives:
  """Global-batch reductions for per-device loss code.

  Attributes:
    mean: turns a per-device batch mean into the global batch mean.
    gather: concatenates per-device arrays [b, ...] into the global batch [B, ...], in global
      example order.
  """

  mean: Callable[[jnp.ndarray], jnp.ndarray]
  gather: Callable[[jnp.ndarray], jnp.ndarray]


LOCAL = Collectives(mean=lambda v: v, gather=lambda v: v)
"""Reductions when the whole batch is on one device (outside `shard_map`)."""

DATA_COLLECTIVES = Collectives(
  mean=lambda v: lax.pmean(v, DATA_AXIS),
  gather=lambda v: lax.all_gather(v, DATA_AXIS, tiled=True),
)
"""Reductions over the data axis, for code inside `shard_map`."""


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
