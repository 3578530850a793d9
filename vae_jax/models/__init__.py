"""Model registry: `build_model(config.model, data_spec)` builds the family `config.model.name`.

Adding a family means one module in this package (a `base.Model` subclass with its capabilities,
config, validation and `from_config`), one config file in `configs/`, and one line in `MODELS`.
A family's own fields live in `config.model.<name>`; `select_model(config, name)` switches a config
to a family and gives it that family's defaults.
"""

import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import ConfigError
from vae_jax.models.autoencoder import Autoencoder
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.btcvae import BetaTCVAE
from vae_jax.models.dipvae import DIPVAE
from vae_jax.models.factorvae import FactorVAE
from vae_jax.models.gumbel import GumbelVAE
from vae_jax.models.hvae import HVAE
from vae_jax.models.iaf import IAFVAE
from vae_jax.models.infovae import InfoVAE
from vae_jax.models.planar import PlanarVAE
from vae_jax.models.stacked import StackedVAE
from vae_jax.models.vae import CVAE, VAE
from vae_jax.models.vampprior import VampPriorVAE
from vae_jax.models.vqvae import VQVAE
from vae_jax.models.vqvae_prior import VQVAEClassPrior, VQVAEPrior
from vae_jax.models.wae import WAE

__all__ = [
  "MODELS",
  "Capabilities",
  "Model",
  "ModelOutput",
  "Posterior",
  "build_model",
  "family",
  "select_model",
]

MODELS: dict[str, type[Model]] = {
  "vae": VAE,
  "cvae": CVAE,
  "ae": Autoencoder,
  "btcvae": BetaTCVAE,
  "factorvae": FactorVAE,
  "hvae": HVAE,
  "iaf": IAFVAE,
  "planar": PlanarVAE,
  "vampprior": VampPriorVAE,
  "vqvae": VQVAE,
  "stacked": StackedVAE,
  "wae": WAE,
  "infovae": InfoVAE,
  "dipvae": DIPVAE,
  "gumbel": GumbelVAE,
  "vqvae_prior": VQVAEPrior,
  "vqvae_cprior": VQVAEClassPrior,
}


def family(name: str) -> type[Model]:
  """The model class registered as `name`.

  Raises:
    ConfigError: no family has that name.
  """
  if name not in MODELS:
    raise ConfigError(f"model.name={name!r} is not one of {tuple(MODELS)}.")
  return MODELS[name]


def build_model(config: ml_collections.ConfigDict, data: DataSpec) -> Model:
  """Builds the family named by `config.name` (`config` is `config.model`) for `data`."""
  return family(config.name).from_config(config, data)


def select_model(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict | None:
  """Makes `config` (a whole run config) train the family `name`, with its default fields.

  Sets `config.model.name` and puts the family's defaults in `config.model.<name>` (those already
  there are kept); the fields of other families are removed.

  Returns:
    The family's sub-config (`config.model.<name>`) to override, or None when it has none.
  """
  defaults = family(name).family_config()
  with config.unlocked():
    config.model.name = name
    for other in MODELS:
      if other != name and other in config.model:
        del config.model[other]
    if defaults is None:
      return None
    if name in config.model:
      defaults.update(config.model[name])
    config.model[name] = defaults
  return config.model[name]
