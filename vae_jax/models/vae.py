"""Gaussian-posterior VAE, optionally conditioned on a class label (CVAE)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import objectives
from vae_jax.models.bodies import Head


class VAE(nn.Module):
  """q(z|x) = N(mu, diag(exp(logvar))), p(z) = N(0, I), p(x|z) given by the decoder output.

  Attributes:
    encoder: body mapping (x, cond) to features.
    decoder: body mapping (z, cond) to per-pixel likelihood parameters (logits or means).
    latent_dim: size of z.
    num_classes: > 0 makes the model conditional: the one-hot label joins encoder and decoder.
    learn_sigma: adds a learned scalar observation log-std (for the learned-sigma Gaussian).
    init_scheme: initialisation of the head ('flax' or 'pytorch', see `bodies`).
  """

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  num_classes: int = 0
  learn_sigma: bool = False
  init_scheme: str = "flax"

  def setup(self):  # noqa: D102
    self.posterior_head = Head(2 * self.latent_dim, self.init_scheme)
    if self.learn_sigma:
      self.log_sigma = self.param("log_sigma", nn.initializers.zeros, ())

  def _cond(self, y: jnp.ndarray | None) -> jnp.ndarray | None:
    if not self.num_classes:
      return None
    if y is None:
      raise ValueError("A conditional model needs labels y.")
    return jax.nn.one_hot(y, self.num_classes)

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Returns the posterior mean and log-variance, each [batch, latent_dim]."""
    mu, logvar = jnp.split(self.posterior_head(self.encoder(x, self._cond(y))), 2, axis=-1)
    return mu, logvar

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns the decoder output (likelihood parameters) of the image's shape."""
    return self.decoder(z, self._cond(y))

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> dict:
    """Encodes, samples z = mu + sigma * eps with eps drawn from one key per example, decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: integer labels [batch] (conditional models only).

    Returns:
      Dict with decoder output `out`, posterior `mu`, `logvar`, the sample `z`, the analytic
      `kl_per_dim`, the sample's `log_q_z` and `log_p_z` [batch], and `log_sigma` when the
      observation noise is learned.
    """
    mu, logvar = self.encode(x, y)
    eps = jax.vmap(lambda k: jax.random.normal(k, (self.latent_dim,), mu.dtype))(keys)
    z = mu + jnp.exp(0.5 * logvar) * eps
    outputs = {
      "out": self.decode(z, y),
      "mu": mu,
      "logvar": logvar,
      "z": z,
      "kl_per_dim": objectives.kl_standard_normal(mu, logvar),
      "log_q_z": objectives.gaussian_log_density(z, mu, logvar),
      "log_p_z": objectives.standard_normal_log_density(z),
    }
    if self.learn_sigma:
      outputs["log_sigma"] = self.log_sigma
    return outputs

  def generate(
    self, rng: jax.Array, num: int, y: jnp.ndarray | None = None, temperature: float = 1.0
  ) -> jnp.ndarray:
    """Decoder outputs of `num` draws z ~ N(0, temperature^2 I) from the prior."""
    z = temperature * jax.random.normal(rng, (num, self.latent_dim))
    return self.decode(z, y)
