"""FactorVAE (Kim & Mnih 2018) on procedural dSprites: beta4.py's architecture and optimisation.

gamma = 35 on the discriminator's TC estimate; the discriminator is the paper's MLP (6 x 1000, leaky
ReLU 0.2) trained by its own Adam (learning rate 1e-4, b1 = 0.5, b2 = 0.9, as the paper and
disentanglement_lib), the VAE by beta4's Adam (1e-4, b1 = 0.9, b2 = 0.999). The KL weight of the
ELBO (`objective.beta`) is 1. `:quick` is beta4's short run (the VAE's learning rate 5e-4).
"""

import ml_collections

from configs import beta4
from vae_jax import models


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = beta4.get_config(variant)
  factorvae = models.select_model(config, "factorvae")
  factorvae.gamma = 35.0
  factorvae.discriminator_learning_rate = 1e-4
  config.objective.beta = 1.0
  return config
