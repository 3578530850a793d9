"""Where a run's training batches come from: assembled on the device, or sent from the host.

On the device (`config.data.on_device`, for streams that support it and data that fit): the
stream's arrays (the uint8 training split, or procedural dSprites' sprite masks) are placed on the
devices once, replicated, and each step's batch is gathered or rendered inside the jitted step
from a small per-step input (the examples' indices, or their factors). From the host: the
stream's batches themselves are the per-step inputs. Both give the same batches, so the numbers
do not depend on the path.
"""

from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from vae_jax.training import mesh as meshes
from vae_jax.training import steps

MAX_DEVICE_BYTES = 4 << 30  # Larger training sets stay on the host.


class Feed:
  """A training stream's per-step inputs and how the step assembles them into batches.

  Attributes:
    stream: the run's training stream (`batch(step)`, and for the device path `device_arrays()`,
      `step_inputs(step)` and `assemble(arrays, inputs)`).
    arrays: what the device path assembles from, replicated over the mesh; {} on the host path.
    assemble: `(arrays, inputs) -> batch`, traced inside the step.
    on_device: whether batches are assembled on the device.
  """

  def __init__(self, stream, mesh: jax.sharding.Mesh, on_device: bool = True):
    self.stream, self.mesh = stream, mesh
    arrays = stream.device_arrays() if on_device and hasattr(stream, "device_arrays") else None
    size = sum(np.asarray(a).nbytes for a in (arrays or {}).values())
    if arrays and size > MAX_DEVICE_BYTES:
      logging.info("Training data (%.1f GiB) stay on the host.", size / 2**30)
      arrays = None
    self.on_device = arrays is not None
    self.arrays = meshes.put(arrays, meshes.replicated(mesh)) if arrays else {}
    self.assemble: Callable[[dict, dict], dict] = (
      stream.assemble if self.on_device else steps.pass_batch
    )

  def host_inputs(self, step: int, stream=None, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Rows `rows` of one step's inputs, on the host; `stream` (default this feed's) draws them.

    Vectorized sweep members share one feed (the same data) but each has its own stream.
    """
    stream = stream or self.stream
    if self.on_device:
      return jax.tree.map(lambda v: v[rows], stream.step_inputs(step))
    return stream.batch(step, rows)

  def inputs(self, start: int, end: int) -> dict[str, jax.Array]:
    """Steps [start, end)'s inputs on the devices: one step's, or stacked on a leading axis.

    Each process builds only the rows of the global batch that its devices hold.
    """
    size = self.stream.batch_size
    if end - start == 1:
      sharding = meshes.batch_sharded(self.mesh)
      local = self.host_inputs(start, rows=meshes.rows(sharding, size))
      return meshes.put_rows(local, sharding, size)
    sharding = meshes.stacked_batch_sharded(self.mesh)
    rows = meshes.rows(sharding, size, axis=1)
    stacked = jax.tree.map(
      lambda *v: np.stack(v), *(self.host_inputs(s, rows=rows) for s in range(start, end))
    )
    return meshes.put_rows(stacked, sharding, size, axis=1)
