"""Batches assembled on the device are the host pipeline's batches, so runs are the same."""

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import tiny_config
from vae_jax.data import GroundTruthDataset
from vae_jax.data.dsprites_procedural import ProceduralDSprites
from vae_jax.training import mesh as meshes
from vae_jax.training import train
from vae_jax.training.feed import Feed


def _device_batch(feed: Feed, step: int) -> dict:
  inputs = feed.inputs(step, step + 1)
  return jax.device_get(jax.jit(feed.assemble)(feed.arrays, inputs))


@pytest.mark.parametrize("num_devices", [1, 4])
def test_device_batches_equal_the_host_batches(dataset, num_devices):
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  labelled = dataset.train_stream(32, seed=3)
  sprites = GroundTruthDataset(ProceduralDSprites(), num_test=8).train_stream(16, seed=3)
  for stream in (labelled, sprites):
    feed = Feed(stream, mesh, on_device=True)
    assert feed.on_device
    for step in (0, 7, 8, 9):  # 8 crosses an epoch of the labelled stream.
      host = stream.batch(step)
      device = _device_batch(feed, step)
      assert set(device) == set(host)
      for key in host:
        np.testing.assert_array_equal(device[key], host[key], err_msg=f"{key} at step {step}")
  host_feed = Feed(labelled, mesh, on_device=False)
  assert not host_feed.on_device and host_feed.arrays == {}
  stacked = jax.device_get(host_feed.inputs(4, 7))
  np.testing.assert_array_equal(stacked["image"][1], labelled.batch(5)["image"])


@pytest.mark.parametrize("per_dispatch", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_a_run_on_device_data_equals_the_host_pipeline_bitwise(dataset, tmp_path, per_dispatch):
  mesh = meshes.make_mesh(jax.devices()[:2])
  runs = {}
  for on_device in (True, False):
    config = tiny_config(
      **{
        "data.on_device": on_device,
        "steps_per_execution": per_dispatch,
        "data.binarize": "dynamic",
      }
    )
    workdir = str(tmp_path / str(on_device))
    runs[on_device] = train.train_and_evaluate(config, workdir, mesh=mesh, dataset=dataset)
    runs[on_device]["params"] = helpers.checkpoint_params(workdir, 8)
  for a, b in zip(*(jax.tree.leaves(r["params"]) for r in runs.values()), strict=True):
    np.testing.assert_array_equal(a, b)
  assert runs[True]["eval_elbo"] == runs[False]["eval_elbo"]
