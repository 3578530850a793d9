"""Reconstruction log-likelihoods log p(x|z) from a decoder's output, summed over pixels.

`likelihood` names the observation model: `bernoulli` (decoder output = logits), `gaussian` (output
= mean, fixed sigma), `gaussian_learned` (output = mean, a learned global log-sigma) or
`logistic_mixture` (output = [batch, H, W, K, P] parameters of a discretized mixture of K logistics
per pixel over the 256 values of 8-bit data, `logistic_mixture.py`).
"""

import math

import jax
import jax.numpy as jnp

from vae_jax.losses import logistic_mixture

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "logistic_mixture")
_LOG_2PI = math.log(2.0 * math.pi)


def _sum_pixels(v: jax.Array) -> jax.Array:
  return v.reshape(v.shape[0], -1).sum(axis=-1)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log Bernoulli(x | sigmoid(logits)) summed over pixels, from logits (stable for any logit).

  Also valid for x in [0, 1] (the "continuous Bernoulli-style" cross-entropy most VAE code uses).
  """
  return _sum_pixels(_bernoulli_log_prob(x, logits))


def _softplus_and_sigmoid(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  e = jnp.exp(-jnp.abs(logits))
  softplus = jnp.maximum(logits, 0.0) + jnp.log1p(e)
  sigmoid = jnp.where(logits >= 0, 1.0, e) / (1.0 + e)
  return softplus, sigmoid


@jax.custom_jvp
def _bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  # x * l - softplus(l) with one exp and one log1p per pixel; the JVP reuses the same exp for
  # sigmoid(l), where log_sigmoid(l) and log_sigmoid(-l) would cost two of each, twice over.
  return x * logits - _softplus_and_sigmoid(logits)[0]


@_bernoulli_log_prob.defjvp
def _bernoulli_log_prob_jvp(primals, tangents):
  x, logits = primals
  dx, dlogits = tangents
  softplus, sigmoid = _softplus_and_sigmoid(logits)
  return x * logits - softplus, dx * logits + (x - sigmoid) * dlogits


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_sigma) -> jax.Array:
  """log N(x | mean, sigma^2 I) summed over pixels; `log_sigma` is a scalar or broadcastable."""
  z = (x - mean) * jnp.exp(-log_sigma)
  return _sum_pixels(-0.5 * z**2 - log_sigma - 0.5 * _LOG_2PI)


def log_likelihood(
  x: jax.Array,
  out: jax.Array,
  likelihood: str,
  gaussian_sigma: float = 1.0,
  log_sigma: jax.Array | None = None,
) -> jax.Array:
  """log p(x|z) per example for the decoder output `out`.

  Args:
    x: the (preprocessed) images.
    out: the decoder output: logits (bernoulli), means (gaussian) or mixture parameters.
    likelihood: one of `LIKELIHOODS`.
    gaussian_sigma: the fixed observation std of `gaussian`.
    log_sigma: the model's learned log-std, for `gaussian_learned`.
  """
  if likelihood == "bernoulli":
    return bernoulli_log_likelihood(x, out)
  if likelihood == "gaussian":
    return gaussian_log_likelihood(x, out, jnp.log(gaussian_sigma))
  if likelihood == "gaussian_learned":
    return gaussian_log_likelihood(x, out, log_sigma)
  if likelihood == "logistic_mixture":
    return logistic_mixture.log_likelihood(x, out)
  raise ValueError(f"Unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}.")


def sample(
  keys: jax.Array,
  out: jax.Array,
  likelihood: str,
  gaussian_sigma: float = 1.0,
  log_sigma: jax.Array | None = None,
) -> jax.Array:
  """Draws x ~ p(x|z) for the decoder output `out`, one key per example: [batch, ...].

  Bernoulli draws are binary images; Gaussian draws are the mean plus noise of the observation
  std (unclipped); logistic-mixture draws are 8-bit images k/255. Arguments as in `log_likelihood`.
  """
  if likelihood == "bernoulli":
    draw = jax.vmap(lambda k, logits: jax.random.bernoulli(k, jax.nn.sigmoid(logits)))
    return draw(keys, out).astype(out.dtype)
  if likelihood == "logistic_mixture":
    return jax.vmap(logistic_mixture.sample)(keys, out)
  if likelihood not in LIKELIHOODS:
    raise ValueError(f"Unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}.")
  sigma = gaussian_sigma if likelihood == "gaussian" else jnp.exp(log_sigma)
  noise = jax.vmap(lambda k, mean: jax.random.normal(k, mean.shape).astype(mean.dtype))(keys, out)
  return out + sigma * noise


def decoder_mean(out: jax.Array, likelihood: str) -> jax.Array:
  """The mean of p(x|z) given the decoder output: what an image of the reconstruction shows."""
  if likelihood == "logistic_mixture":
    return logistic_mixture.mean(out)
  return jax.nn.sigmoid(out) if likelihood == "bernoulli" else out


def decoder_shape(image_shape, likelihood: str, num_mixtures: int = 1) -> tuple[int, ...]:
  """The shape of one example's decoder output: the image's, or (H, W, K, P) for the mixture."""
  if likelihood == "logistic_mixture":
    return logistic_mixture.output_shape(image_shape, num_mixtures)
  return tuple(image_shape)
