"""Global-batch reductions for per-device loss code.

A loss that is nonlinear in a batch statistic (free bits, a total-correlation estimate, a
discriminator over permuted codes) must see the global batch for its value not to depend on how
many devices share the batch. Per-device code receives a `Collectives` and reduces through it:
`LOCAL` when the whole batch is on one device, `over_axis(name)` inside `shard_map`.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class Collectives:
  """Global-batch reductions.

  Attributes:
    mean: turns a per-device batch mean into the global batch mean.
    gather: concatenates per-device arrays [b, ...] into the global batch [B, ...], in global
      example order.

    rows: the positions in the global batch of this device's `n` examples.
  """

  mean: Callable[[jax.Array], jax.Array]
  gather: Callable[[jax.Array], jax.Array]
  rows: Callable[[int], jax.Array]


LOCAL = Collectives(mean=lambda v: v, gather=lambda v: v, rows=jnp.arange)
"""Reductions when the whole batch is on one device (outside `shard_map`)."""


def over_axis(axis_name: str) -> Collectives:
  """Reductions over a mesh axis, for code inside `shard_map`."""
  return Collectives(
    mean=lambda v: lax.pmean(v, axis_name),
    gather=lambda v: lax.all_gather(v, axis_name, tiled=True),
    rows=lambda n: lax.axis_index(axis_name) * n + jnp.arange(n),
  )
