"""Accelerator-readiness on simulated CPU devices: work per device shrinks with the devices, and
the shipped dSprites configs run on 8 devices with their default batch sizes."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from tests.conftest import REPO, tiny_config
from vae_jax.models import build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps


def _flops_per_device(config, dataset, num_devices: int) -> float:
  model = build_model(config.model, dataset.spec)
  tx = optax.adam(1e-3)
  state = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec)
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  step = steps.make_train_step(model, tx, config, mesh)
  batch = dataset.train_stream(config.data.batch_size, 0).batch(0)
  compiled = step.lower(state, batch, jax.random.key(1)).compile()
  return float(compiled.cost_analysis()["flops"])


@pytest.mark.parametrize(
  "overrides",
  [
    # The [b, M, D] log-density table of beta-TCVAE dominates this step.
    {"model.name": "btcvae", "model.latent_dim": 64, "data.batch_size": 256},
    # The discriminator dominates this one.
    {
      "model.name": "factorvae",
      "model.factorvae.discriminator_hidden_sizes": (512, 512, 512),
      "data.batch_size": 256,
    },
  ],
)
def test_the_batch_losses_work_shrinks_with_the_device_count(dataset, overrides):
  config = tiny_config(**{"model.hidden_sizes": (8,), **overrides})
  one, four = (_flops_per_device(config, dataset, n) for n in (1, 4))
  assert four / one < 0.35, (one, four)


@pytest.mark.slow
def test_shipped_dsprites_configs_run_on_8_devices_with_their_default_batch_sizes(tmp_path):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8")
  small = [
    "--config.num_train_steps=2",
    "--config.log_every_steps=1",
    "--config.model.conv_features=(8,8,8,8)",
    "--config.model.dense_sizes=(16,)",
    "--config.data.num_eval_examples=1000",  # Evaluated in batches of data.eval_batch_size=500.
    "--config.num_prior_samples=4",
    "--config.num_image_examples=2",
    "--config.num_traversal_inputs=1",
  ]
  for name in ("beta4", "dsprites_factorvae"):
    workdir = tmp_path / name
    proc = subprocess.run(
      [
        sys.executable,
        "-m",
        "vae_jax.main",
        f"--config=configs/{name}.py:quick",
        *small,
        f"--workdir={workdir}",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rounded up to 504 to split over 8 devices" in proc.stderr
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "vae_jax.evaluate",
      f"--workdir={tmp_path / 'beta4'}",
      "--metrics=elbo,iw_nll",
      "--iw_samples=2",
      "--num_examples=100",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]  # iw_batch_size=100 rounds up to 104.
  value = re.search(r"^\s+iw_nll\s+(\S+)$", proc.stdout, re.M)
  assert value and np.isfinite(float(value.group(1))), proc.stdout
