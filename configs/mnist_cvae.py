"""Conditional VAE: the one-hot digit label joins the encoder input and z (784-512-256-z)."""

import ml_collections

from configs import default
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  models.select_model(config, "cvae")
  config.model.hidden_sizes = (512, 256)
  return config
