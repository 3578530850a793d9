"""Deterministic autoencoder baseline: the VAE's bodies with a point code and no KL term."""

import flax.linen as nn
import jax
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.models.base import Model, ModelOutput, Posterior
from vae_jax.models.bodies import Head, build_bodies


class Autoencoder(Model):
  """x -> z = f(x) -> decoder output; trained on reconstruction alone (no prior, no density).

  Attributes:
    encoder: body mapping x to features.
    decoder: body mapping z to per-pixel likelihood parameters.
    latent_dim: size of z.
    init_scheme: initialisation of the head ('flax' or 'pytorch', see `bodies`).
  """

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  init_scheme: str = "flax"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "Autoencoder":
    """The autoencoder of `config.model`'s bodies and latent size."""
    encoder, decoder = build_bodies(config, data.image_shape)
    return cls(encoder, decoder, config.latent_dim, init_scheme=config.init_scheme)

  def setup(self):  # noqa: D102
    self.code_head = Head(self.latent_dim, self.init_scheme)

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """The code z, [batch, latent_dim], as the posterior's (point) mean."""
    del y
    return Posterior(self.code_head(self.encoder(x)))

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The decoder output of the image's shape."""
    del y
    return self.decoder(z)

  def __call__(self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """Encodes and decodes; `keys` is accepted for a uniform interface and unused."""
    del keys
    z = self.encode(x).mean
    return ModelOutput(out=self.decode(z), z=z)
