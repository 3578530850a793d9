"""Readers for what a run leaves in its workdir, and the flags of a tiny run."""

import glob
import json
import os

import numpy as np
import orbax.checkpoint as ocp
from tensorboard.backend.event_processing import event_accumulator

# Command-line flags of a run that needs no data files: procedural dSprites through a tiny MLP
# (~300 steps/s in one process here).
TINY_RUN = [
  "--config=configs/beta4.py",
  "--config.model.arch=mlp",
  "--config.model.hidden_sizes=(16,)",
  "--config.data.num_eval_examples=100",
  "--config.data.eval_batch_size=50",
  "--config.num_prior_samples=4",
  "--config.num_image_examples=2",
  "--config.num_traversal_inputs=1",
]


def results(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def checkpoint_params(workdir: str, step: int) -> dict:
  """The params of checkpoint `step`, whatever devices (and processes) wrote it."""
  path = os.path.abspath(os.path.join(workdir, "checkpoints", str(step), "default"))
  import jax

  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here), metadata)
  return jax.device_get(checkpointer.restore(path, target)["params"])


def assert_trees_close(a, b, atol: float) -> None:
  import jax

  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, err_msg=str(path))


def event_tags(workdir: str) -> set[str]:
  tags = set()
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    acc.Reload()
    tags |= set(acc.Tags()["tensors"])
  return tags


def scalar_series(workdir: str, tag: str) -> list[tuple[int, float]]:
  out = []
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    acc.Reload()
    if tag in acc.Tags()["tensors"]:
      out += [(e.step, float(np.asarray(_value(e)))) for e in acc.Tensors(tag)]
  return sorted(out)


def _value(event):
  from tensorboard.util import tensor_util

  return tensor_util.make_ndarray(event.tensor_proto)


def checkpoint_steps(workdir: str) -> list[str]:
  return [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
