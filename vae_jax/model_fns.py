"""What a trained model offers the loop and the tools: encode, decode, reconstruct, sample.

Plain functions of (model, params, ...), run eagerly; callers may wrap them in `jax.jit`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import objectives


def posterior_mean(model: nn.Module, params, x: jnp.ndarray, y=None) -> jnp.ndarray:
  """The deterministic code of x: the posterior mean for a VAE, the code for an autoencoder."""
  code = model.apply({"params": params}, x, y, method=model.encode)
  return code[0] if isinstance(code, tuple) else code


def decode_mean(model: nn.Module, params, z: jnp.ndarray, likelihood: str, y=None) -> jnp.ndarray:
  """The mean of p(x|z): the image a latent decodes to."""
  out = model.apply({"params": params}, z, y, method=model.decode)
  return objectives.decoder_mean(out, likelihood)


def reconstruct(model: nn.Module, params, x: jnp.ndarray, likelihood: str, y=None) -> jnp.ndarray:
  """Decodes the posterior mean of x."""
  return decode_mean(model, params, posterior_mean(model, params, x, y), likelihood, y)


def prior_samples(
  model: nn.Module, params, rng: jax.Array, n: int, latent_dim: int, likelihood: str, y=None
) -> jnp.ndarray:
  """Decoded means of n draws z ~ N(0, I)."""
  z = jax.random.normal(rng, (n, latent_dim))
  return decode_mean(model, params, z, likelihood, y)
