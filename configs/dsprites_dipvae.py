"""DIP-VAE-II (Kumar et al. 2018) on procedural dSprites: beta4.py's architecture and optimisation.

lambda_od = 10 and lambda_d = lambda_od (disentanglement_lib's lambda_d_factor 1 for type II; its
study sweeps lambda_od over 1 ... 50). `--config.model.dipvae.type=i
--config.model.dipvae.lambda_d_factor=10` trains DIP-VAE-I with its lambda_d = 10 lambda_od. The
KL weight of the ELBO (`objective.beta`) is 1. `:quick` is beta4's short run.
"""

import ml_collections

from configs import beta4
from vae_jax import models


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = beta4.get_config(variant)
  dipvae = models.select_model(config, "dipvae")
  dipvae.type = "ii"
  dipvae.lambda_od = 10.0
  dipvae.lambda_d_factor = 1.0
  config.objective.beta = 1.0
  return config
