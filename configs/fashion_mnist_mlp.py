"""`mnist_mlp.py` on Fashion-MNIST: the same VAE (784-400-20, Bernoulli, Adam 1e-3, batch 128).

Offline: `--config.data.manual_dir=../shared/data/fashion_mnist`. Used by
`experiments/ood_fashion_mnist` to test likelihood-based out-of-distribution detection on MNIST.
"""

import ml_collections

from configs import mnist_mlp


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  config.data.name = "fashion_mnist"
  return config
