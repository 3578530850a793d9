"""The sweep this experiment ran: beta in {1, 4, 16} x seeds {0, 1} on the beta4.py setting.

A 6-member subset of configs/beta_sweep.py (beta in {1, 2, 4, 8, 16} x seeds {0, 1, 2}) that fits
this experiment's 2-core CPU budget; the members' configs are exactly beta_sweep's.
"""

import ml_collections

from configs import beta_sweep
from vae_jax.sweep import spec


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """beta_sweep's (that is beta4's) config; `:quick` for the short run."""
  return beta_sweep.get_config(variant)


def get_sweep() -> list[spec.Overrides]:
  """The 6 members: beta varies slowest."""
  return spec.product({"objective.beta": [1.0, 4.0, 16.0]}, seed=[0, 1])
