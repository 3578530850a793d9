"""Deterministic autoencoder baseline (no sampling, no KL) with the MLP bodies of the VAE."""

import ml_collections

from configs import default
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  models.select_model(config, "ae")
  return config
