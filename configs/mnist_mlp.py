"""The seeds' reference VAE: MLP 784-400-20, Bernoulli likelihood, Adam 1e-3, batch 128, 10 epochs.

The default config is exactly this model; this file names it.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  return default.get_config()
