"""Two-layer ladder VAE on MNIST: the mnist_mlp bodies (784-400), z_0 of 64 dims below a 20-dim top.

Same Bernoulli likelihood, data, optimizer (Adam 1e-3, batch 128) and 10-epoch budget as
configs/mnist_mlp.py, so the two compare at equal training cost. Initialisation is Flax's (LeCun
normal) rather than mnist_mlp's PyTorch scheme: the PyTorch uniform init shrinks activations through
the extra bottom-up and prior layers and cost the ladder VAE 6 nats of test ELBO at 3 epochs
(-116.0 vs -109.8; the plain VAE at 3 epochs: -111.8 PyTorch, -111.6 Flax).
"""

import ml_collections

from configs import mnist_mlp


def get_config() -> ml_collections.ConfigDict:
  config = mnist_mlp.get_config()
  config.model.name = "hvae"
  config.model.init_scheme = "flax"
  config.model.latent_dim = 20  # The top layer (the code).
  config.model.hvae_lower_dims = (64,)
  config.model.hvae_hidden = 256
  return config
