"""beta-VAE sweep on procedural dSprites: beta in {1, 2, 4, 8, 16} x seeds {0, 1, 2}, 15 runs.

Every member is the beta4.py setting (Higgins et al. 2017 architecture and data) with its own beta
and seed; `:quick` gives each member beta4.py's 3,000-step variant.

  python -m vae_jax.sweep run --config=configs/beta_sweep.py:quick --workdir=runs/beta_sweep
  python -m vae_jax.sweep report --workdir=runs/beta_sweep
"""

import ml_collections

from configs import beta4
from vae_jax.sweep import spec


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  return beta4.get_config(variant)


def get_sweep() -> list[spec.Overrides]:
  return spec.product({"objective.beta": [1.0, 2.0, 4.0, 8.0, 16.0]}, seed=[0, 1, 2])
