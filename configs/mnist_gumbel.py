"""Gumbel-softmax VAE on MNIST: 30 categorical latents of 10 classes, MLP 784-512-256 and back.

N = 30 variables of K = 10 classes and the 512-256 bodies follow the Categorical VAE notebook of
github.com/ericjang/gumbel-softmax, the companion code of Jang et al. 2017 (its later v2 notebook
uses 20 variables of 10 classes).
Temperature: tau_t = max(0.5, 1.0 exp(-r t)) updated every 500 steps with r = 1e-4, one point of
the paper's grid (r in {1e-5, 1e-4}, every 500 or 1000 steps; the paper picks the best on a
validation split, which this repo does not hold out). Analytic KL to the uniform categorical, as
in the paper and the notebook.

Departures, so that the run compares with this repo's Gaussian VAE rows: grey-level MNIST with a
Bernoulli likelihood (the paper binarizes), batch 128 and Adam 1e-3 without the notebook's decay.
"""

import ml_collections

from configs import default
from vae_jax import models


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  gumbel = models.select_model(config, "gumbel")
  config.model.latent_dim = 30  # N categorical variables.
  config.model.hidden_sizes = (512, 256)
  gumbel.num_classes = 10
  config.steps_per_execution = 16  # Small MLP steps: fewer dispatches on CPU (see mnist_mlp).
  return config
