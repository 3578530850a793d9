"""Every shipped config loads and validates: a typo in a config fails here, not on a GPU."""

import glob
import importlib
import inspect
import os

import pytest

from tests.conftest import REPO
from vae_jax import configuration
from vae_jax.errors import ConfigError

CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
  if not p.endswith("__init__.py")
)
# Second-stage configs name the run they build on; without it, validation says exactly that (their
# own tests validate them with a run).
NEEDS_A_RUN = {
  "mnist_vqvae_prior": "model.vqvae_prior.vqvae_workdir is not set",
  "mnist_vqvae_cprior": "model.vqvae_cprior.vqvae_workdir is not set",
}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
  module = importlib.import_module(f"configs.{name}")
  variants = [""]
  if "variant" in inspect.signature(module.get_config).parameters:
    variants.append("quick")
  for variant in variants:
    config = module.get_config(variant) if variant else module.get_config()
    if name in NEEDS_A_RUN:
      with pytest.raises(ConfigError, match=NEEDS_A_RUN[name]):
        configuration.validate(config, num_devices=1)
    else:
      configuration.validate(config, num_devices=1)


def test_the_model_family_has_its_configs():
  expected = {"mnist_vqvae", "mnist_hvae", "mnist_iaf", "mnist_iwae", "dsprites_btcvae"}
  assert expected | {"dsprites_factorvae", "beta4", "beta_sweep", "mnist_mlp"} <= set(CONFIGS)
