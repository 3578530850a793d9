"""Model registry: `build_model(config.model, image_shape, num_classes)`.

Adding a model family means one module in this package and one entry in `MODELS`.
"""

from collections.abc import Sequence

import flax.linen as nn
import ml_collections

from vae_jax.models import bodies
from vae_jax.models.autoencoder import Autoencoder
from vae_jax.models.vae import VAE

MODELS = ("vae", "cvae", "ae")
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


def build_model(
  config: ml_collections.ConfigDict, image_shape: Sequence[int], num_classes: int
) -> nn.Module:
  """Builds the model named by `config.name` for images of `image_shape` (H, W, C)."""
  encoder, decoder = build_bodies(config, image_shape)
  if config.name == "ae":
    return Autoencoder(encoder, decoder, config.latent_dim, init_scheme=config.init_scheme)
  if config.name in ("vae", "cvae"):
    return VAE(
      encoder,
      decoder,
      config.latent_dim,
      num_classes=num_classes if config.name == "cvae" else 0,
      learn_sigma=config.likelihood == "gaussian_learned",
      init_scheme=config.init_scheme,
    )
  raise ValueError(f"Unknown model.name {config.name!r}; choose one of {MODELS}.")
