"""Convolutional VAE for 28x28: Conv 32 and 64 (3x3, stride 2), dense 256, mirrored decoder."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.arch = "conv"
  config.model.latent_dim = 16
  return config
