"""Class-conditional PixelCNN prior p(c | y) over the codes of a trained MNIST VQ-VAE.

`configs/mnist_vqvae_prior.py` with the digit label conditioning every gated layer (van den Oord
et al. 2016): `--config.model.vqvae_cprior.vqvae_workdir=<the VQ-VAE run>`. Samples take a label
(`vae_jax.tools sample` draws one digit per column); with labels drawn uniformly it is also an
unconditional prior, whose exact code NLL `experiments/vqvae_prior/classify.py` reports.
"""

import ml_collections

from configs import mnist_vqvae_prior
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = mnist_vqvae_prior.get_config()
  models.select_model(config, "vqvae_cprior")
  return config
