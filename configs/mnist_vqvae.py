"""VQ-VAE on MNIST: conv 32, 64 (3x3, stride 2) to a 7x7 grid of 64-d codes, K=512, EMA codebook.

Bernoulli likelihood on grey levels; commitment cost 0.25; the codebook follows moving averages
(decay 0.99) and codes whose EMA share falls below 0.05/K restart at random encoder outputs.
"""

import ml_collections

from configs import default
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  vqvae = models.select_model(config, "vqvae")
  config.model.arch = "conv"
  vqvae.codebook_update = "ema"
  vqvae.dead_code_restart = True
  config.num_epochs = 5
  return config
