"""VAE with a 2-step IAF posterior on MNIST (Kingma et al. 2016): the mnist_mlp model otherwise.

Same bodies (784-400-20), Bernoulli likelihood, data, optimizer, initialisation and budget as
configs/mnist_mlp.py; each IAF step is a MADE with two hidden layers of 320 units, conditioned on a
32-dim context from the encoder.
"""

import ml_collections

from configs import mnist_mlp
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  iaf = models.select_model(config, "iaf")
  iaf.steps = 2
  iaf.hidden_sizes = (320, 320)
  iaf.context_dim = 32
  return config
