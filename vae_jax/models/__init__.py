"""Model registry: `build_model(config.model, image_shape, num_classes)`.

Adding a model family means one module in this package and one entry in `MODEL_BUILDERS`.

Every model is a Flax module with `encode(x, y)` (returning the code, or `(mu, logvar)`),
`decode(z, y)` (decoder output: likelihood parameters) and a forward pass
`__call__(x, keys, y) -> outputs` taking one PRNG key per example. `outputs` holds the decoder
output `out` and the sample `z`, and reports the KL as `kl_per_dim` or as `log_q_z`/`log_p_z` (see
`objectives.per_example_terms`); `extra_terms` adds per-example terms such as `aux_loss`. A model
with a prior has `generate(rng, num, y, temperature)`. A model with a loss over the whole batch (a
discriminator, a batch estimate of total correlation) has `batch_loss(outputs, collectives, rng)`
returning `(loss, metrics)`, added to the objective by the train step. Mutable variable collections
(e.g. EMA codebooks) are updated by the forward pass in training, then by `batch_loss` (which sees
those updates), and averaged over devices.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import ml_collections

from vae_jax.models import bodies, vqvae
from vae_jax.models.autoencoder import Autoencoder
from vae_jax.models.btcvae import BetaTCVAE
from vae_jax.models.factorvae import FactorVAE
from vae_jax.models.hvae import HVAE
from vae_jax.models.iaf import IAFVAE
from vae_jax.models.vae import VAE

ARCHS = ("mlp", "conv")


def build_bodies(
  config: ml_collections.ConfigDict, image_shape: Sequence[int]
) -> tuple[nn.Module, nn.Module]:
  """Returns the (encoder, decoder) bodies named by `config.arch`."""
  if config.arch == "mlp":
    return (
      bodies.MLPEncoder(tuple(config.hidden_sizes), config.init_scheme),
      bodies.MLPDecoder(tuple(config.hidden_sizes), tuple(image_shape), config.init_scheme),
    )
  if config.arch == "conv":
    conv = dict(
      features=tuple(config.conv_features),
      kernel_size=config.conv_kernel_size,
      dense_sizes=tuple(config.dense_sizes),
      init_scheme=config.init_scheme,
    )
    return bodies.ConvEncoder(**conv), bodies.ConvDecoder(**conv, output_shape=tuple(image_shape))
  raise ValueError(f"Unknown model.arch {config.arch!r}; choose one of {ARCHS}.")


def _vae(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  return VAE(
    *build_bodies(config, image_shape),
    config.latent_dim,
    num_classes=num_classes if config.name == "cvae" else 0,
    learn_sigma=config.likelihood == "gaussian_learned",
    init_scheme=config.init_scheme,
  )


def _autoencoder(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  del num_classes
  return Autoencoder(
    *build_bodies(config, image_shape), config.latent_dim, init_scheme=config.init_scheme
  )


def _btcvae(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  del num_classes
  return BetaTCVAE(
    *build_bodies(config, image_shape),
    config.latent_dim,
    learn_sigma=config.likelihood == "gaussian_learned",
    init_scheme=config.init_scheme,
    alpha=config.btcvae_alpha,
    beta=config.btcvae_beta,
    gamma=config.btcvae_gamma,
    dataset_size=config.btcvae_dataset_size,
    estimator=config.btcvae_estimator,
  )


def _factorvae(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  return FactorVAE(
    _vae(config, image_shape, num_classes),
    gamma=config.factorvae_gamma,
    discriminator_hidden_sizes=tuple(config.discriminator_hidden_sizes),
  )


def _hvae(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  del num_classes
  return HVAE(
    *build_bodies(config, image_shape),
    latent_dims=(*config.hvae_lower_dims, config.latent_dim),
    hidden_size=config.hvae_hidden,
    learn_sigma=config.likelihood == "gaussian_learned",
    init_scheme=config.init_scheme,
  )


def _iaf(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  del num_classes
  return IAFVAE(
    *build_bodies(config, image_shape),
    config.latent_dim,
    num_steps=config.iaf_steps,
    made_hidden_sizes=tuple(config.iaf_hidden_sizes),
    context_dim=config.iaf_context_dim,
    learn_sigma=config.likelihood == "gaussian_learned",
    init_scheme=config.init_scheme,
  )


def _vqvae(config: ml_collections.ConfigDict, image_shape, num_classes: int) -> nn.Module:
  del num_classes
  return vqvae.build(config, image_shape)


MODEL_BUILDERS: dict[str, Callable[[ml_collections.ConfigDict, Sequence[int], int], nn.Module]] = {
  "vae": _vae,
  "cvae": _vae,
  "ae": _autoencoder,
  "btcvae": _btcvae,
  "factorvae": _factorvae,
  "hvae": _hvae,
  "iaf": _iaf,
  "vqvae": _vqvae,
}
MODELS = tuple(MODEL_BUILDERS)
CONDITIONAL_MODELS = ("cvae",)  # Need labels.
# Output log_q_z and log_p_z (IWAE, IW-NLL).
IMPORTANCE_WEIGHTED_MODELS = ("vae", "cvae", "hvae", "iaf", "btcvae", "factorvae")


def build_model(
  config: ml_collections.ConfigDict, image_shape: Sequence[int], num_classes: int
) -> nn.Module:
  """Builds the model named by `config.name` for images of `image_shape` (H, W, C)."""
  if config.name not in MODEL_BUILDERS:
    raise ValueError(f"Unknown model.name {config.name!r}; choose one of {MODELS}.")
  return MODEL_BUILDERS[config.name](config, image_shape, num_classes)
