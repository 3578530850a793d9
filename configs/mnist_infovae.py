"""InfoVAE / MMD-VAE (Zhao et al. 2017) on MNIST: configs/mnist_mlp.py's VAE plus an MMD term.

alpha = 0 and lambda = 1000 in the paper's notation: the ELBO (KL weight 1 - alpha =
`objective.beta` = 1) plus (alpha + lambda - 1) = 999 times MMD_u^2 of q(z) and N(0, I) with the
Gaussian kernel exp(-||x - y||^2 / (2 d)). The weight is ours, not a setting taken from the paper:
next to an ELBO of ~100 nats per image the MMD (0.0014 on the test split after 3 epochs of this
config) needs a weight of this size to matter. Model, data and optimizer are mnist_mlp's
(784-400-20, Bernoulli, Adam 1e-3, batch 128).
"""

import ml_collections

from configs import mnist_mlp
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  models.select_model(config, "infovae").mmd_weight = 999.0
  config.objective.beta = 1.0
  return config
