"""What a trained model offers the loop and the tools: encode, decode, reconstruct, sample.

Plain functions of (model, variables, ...), where `variables` is the Flax variables dict
(`steps.variables(params, model_state)`), run eagerly; callers may wrap them in `jax.jit`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import objectives


def posterior_mean(model: nn.Module, model_vars: dict, x: jnp.ndarray, y=None) -> jnp.ndarray:
  """The deterministic code of x: the posterior mean for a VAE, the code for an autoencoder."""
  code = model.apply(model_vars, x, y, method=model.encode)
  return code[0] if isinstance(code, tuple) else code


def decode_mean(
  model: nn.Module, model_vars: dict, z: jnp.ndarray, likelihood: str, y=None
) -> jnp.ndarray:
  """The mean of p(x|z): the image a latent decodes to."""
  out = model.apply(model_vars, z, y, method=model.decode)
  return objectives.decoder_mean(out, likelihood)


def reconstruct(
  model: nn.Module, model_vars: dict, x: jnp.ndarray, likelihood: str, y=None
) -> jnp.ndarray:
  """Decodes the posterior mean of x."""
  return decode_mean(model, model_vars, posterior_mean(model, model_vars, x, y), likelihood, y)


def has_prior(model: nn.Module) -> bool:
  """Whether the model can generate (an autoencoder has no prior to sample)."""
  return hasattr(model, "generate")


def prior_samples(
  model: nn.Module,
  model_vars: dict,
  rng: jax.Array,
  n: int,
  likelihood: str,
  y=None,
  temperature: float = 1.0,
) -> jnp.ndarray:
  """Decoded means of n draws from the model's prior (its own sampler, `model.generate`)."""
  out = model.apply(model_vars, rng, n, y, temperature, method=model.generate)
  return objectives.decoder_mean(out, likelihood)
