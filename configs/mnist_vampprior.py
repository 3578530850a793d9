"""VAE with a VampPrior of K = 500 pseudo-inputs on MNIST (Tomczak & Welling 2018).

The mnist_mlp model otherwise: same bodies (784-400-20), Bernoulli likelihood, data, optimizer
(Adam 1e-3, batch 128), PyTorch initialisation and budget, so the two compare at equal training
cost. Pseudo-inputs start at N(0.05, 0.01) pixels, the authors' MNIST setting. Departures from the
paper's protocol: no KL warm-up (the paper warms up over 100 epochs of a 2000-epoch budget), and the
paper's gated 300-unit layers, 40-dim z, learning rate 5e-4 and batch 100 are replaced by
mnist_mlp's.
"""

import ml_collections

from configs import mnist_mlp
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  vampprior = models.select_model(config, "vampprior")
  vampprior.num_pseudo_inputs = 500
  vampprior.pseudo_init_mean = 0.05
  vampprior.pseudo_init_std = 0.01
  return config
