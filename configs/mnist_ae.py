"""Deterministic autoencoder baseline (no sampling, no KL) with the MLP bodies of the VAE."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.name = "ae"
  return config
