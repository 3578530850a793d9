"""IWAE (Burda et al. 2015): the mnist_mlp VAE trained on the k = 5 importance-weighted bound.

Same model, data and optimizer as configs/mnist_mlp.py; only the objective differs. Each step costs
about k forward/backward passes of the decoder.
"""

import ml_collections

from configs import mnist_mlp


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  config.objective.estimator = "iwae"
  config.objective.num_samples = 5
  return config
