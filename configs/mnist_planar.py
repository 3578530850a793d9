"""VAE with a 10-step planar-flow posterior on MNIST (Rezende & Mohamed 2015).

The mnist_mlp model otherwise: same bodies (784-400-20), Bernoulli likelihood, data, optimizer,
PyTorch initialisation and budget; the encoder head also gives every step's (u, w, b) per example
(amortised flow parameters, as in the paper). The paper's MNIST runs use flows of 10 to 80 steps,
a 40-dim z, maxout encoders and RMSprop with an annealed KL; those are replaced by mnist_mlp's.
"""

import ml_collections

from configs import mnist_mlp
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  planar = models.select_model(config, "planar")
  planar.flows = 10
  return config
