"""beta-TCVAE (Chen et al. 2018) on procedural dSprites: beta4.py's architecture and optimisation.

beta = 6 on the total correlation with alpha = gamma = 1 (the ELBO plus 5 TC) is the paper's
dSprites setting; log q(z) uses the paper's minibatch weighted sampling with N the dataset's
size (737,280, its factor grid; see vae_jax/losses/total_correlation.py for the constant this adds
to the logged TC). The KL weight of the ELBO itself (`objective.beta`) is 1. `:quick` is beta4's
short run.
"""

import ml_collections

from configs import beta4
from vae_jax import models


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = beta4.get_config(variant)
  models.select_model(config, "btcvae").beta = 6.0
  config.objective.beta = 1.0
  return config
