"""Conditional VAE: the one-hot digit label joins the encoder input and z (784-512-256-z)."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.name = "cvae"
  config.model.hidden_sizes = (512, 256)
  return config
