"""Deterministic autoencoder baseline: the VAE's bodies with a point code and no KL term."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.models.bodies import Head


class Autoencoder(nn.Module):
  """x -> z = f(x) -> decoder output; trained on reconstruction alone.

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

  def setup(self):  # noqa: D102
    self.code_head = Head(self.latent_dim, self.init_scheme)

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns the code z, [batch, latent_dim]."""
    del y
    return self.code_head(self.encoder(x))

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns the decoder output of the image's shape."""
    del y
    return self.decoder(z)

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> dict:
    """Encodes and decodes; `keys` is accepted for a uniform interface and unused."""
    del keys
    z = self.encode(x)
    return {"out": self.decode(z), "z": z}
