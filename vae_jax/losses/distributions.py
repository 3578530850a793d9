"""Diagonal Gaussians: log densities, KL divergences and reparameterised sampling.

All densities are summed over the last (latent) axis unless they say "per dimension".
"""

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z | mu, diag(exp(logvar))) summed over the last axis."""
  return jnp.sum(-0.5 * (jnp.square(z - mu) * jnp.exp(-logvar) + logvar + _LOG_2PI), axis=-1)


def standard_normal_log_density(z: jax.Array) -> jax.Array:
  """log N(z | 0, I) summed over the last axis."""
  return jnp.sum(-0.5 * (jnp.square(z) + _LOG_2PI), axis=-1)


def kl_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, [batch, latent_dim]."""
  return 0.5 * (jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)


def gaussian_kl(
  mu_q: jax.Array, logvar_q: jax.Array, mu_p: jax.Array, logvar_p: jax.Array
) -> jax.Array:
  """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension."""
  return 0.5 * (
    logvar_p - logvar_q + (jnp.exp(logvar_q) + jnp.square(mu_q - mu_p)) * jnp.exp(-logvar_p) - 1.0
  )


def standard_normal_noise(keys: jax.Array, dim: int, dtype=jnp.float32) -> jax.Array:
  """eps ~ N(0, I) of size `dim` for each example, drawn from that example's key: [batch, dim].

  One key per example makes the noise independent of how the batch is split over devices; it is
  drawn in float32 and then cast, so the same keys give the same noise in any compute dtype.
  """
  return jax.vmap(lambda k: jax.random.normal(k, (dim,)).astype(dtype))(keys)


def reparameterize(mu: jax.Array, logvar: jax.Array, keys: jax.Array) -> jax.Array:
  """z = mu + exp(logvar / 2) * eps with eps from one key per example (the reparameterisation)."""
  eps = standard_normal_noise(keys, mu.shape[-1], mu.dtype)
  return mu + jnp.exp(0.5 * logvar) * eps


def logmeanexp(v: jax.Array, axis: int = 0) -> jax.Array:
  """log(mean(exp(v))) along `axis`, computed stably."""
  return jax.nn.logsumexp(v, axis=axis) - math.log(v.shape[axis])
