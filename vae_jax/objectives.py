"""Reconstruction log-likelihoods, the analytic Gaussian KL, and the (beta-)ELBO loss.

All quantities are per example, in nats. `recon` is E_q[log p(x|z)] (a log-likelihood, so <= 0 for
binary data), `kl` is KL(q(z|x) || N(0, I)), `elbo = recon - kl`, and the loss is
`-recon + beta * kl`.
"""

import math

import jax
import jax.numpy as jnp

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
_LOG_2PI = math.log(2.0 * math.pi)


def _sum_pixels(v: jnp.ndarray) -> jnp.ndarray:
  return v.reshape(v.shape[0], -1).sum(axis=-1)


def bernoulli_log_likelihood(x: jnp.ndarray, logits: jnp.ndarray) -> jnp.ndarray:
  """log Bernoulli(x | sigmoid(logits)) summed over pixels, from logits (stable for any logit).

  Also valid for x in [0, 1] (the "continuous Bernoulli-style" cross-entropy most VAE code uses).
  """
  return _sum_pixels(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits))


def gaussian_log_likelihood(x: jnp.ndarray, mean: jnp.ndarray, log_sigma) -> jnp.ndarray:
  """log N(x | mean, sigma^2 I) summed over pixels; `log_sigma` is a scalar or broadcastable."""
  z = (x - mean) * jnp.exp(-log_sigma)
  return _sum_pixels(-0.5 * z**2 - log_sigma - 0.5 * _LOG_2PI)


def reconstruction_log_likelihood(
  x: jnp.ndarray, outputs: dict, likelihood: str, gaussian_sigma: float = 1.0
) -> jnp.ndarray:
  """log p(x|z) per example for the model's decoder output `outputs['out']`."""
  out = outputs["out"]
  if likelihood == "bernoulli":
    return bernoulli_log_likelihood(x, out)
  if likelihood == "gaussian":
    return gaussian_log_likelihood(x, out, jnp.log(gaussian_sigma))
  if likelihood == "gaussian_learned":
    return gaussian_log_likelihood(x, out, outputs["log_sigma"])
  raise ValueError(f"Unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}.")


def decoder_mean(out: jnp.ndarray, likelihood: str) -> jnp.ndarray:
  """The mean of p(x|z) given the decoder output: what an image of the reconstruction shows."""
  return jax.nn.sigmoid(out) if likelihood == "bernoulli" else out


def kl_standard_normal(mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, [batch, latent_dim]."""
  return 0.5 * (jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)


def per_example_terms(
  x: jnp.ndarray, outputs: dict, likelihood: str, gaussian_sigma: float = 1.0
) -> dict[str, jnp.ndarray]:
  """Returns per-example `recon`, `kl`, `kl_per_dim` and `elbo` for a model's outputs.

  Models without a posterior variance (the deterministic autoencoder) have zero KL.
  """
  recon = reconstruction_log_likelihood(x, outputs, likelihood, gaussian_sigma)
  if "logvar" in outputs:
    kl_per_dim = kl_standard_normal(outputs["mu"], outputs["logvar"])
  else:
    kl_per_dim = jnp.zeros_like(outputs["z"])
  kl = kl_per_dim.sum(axis=-1)
  return {"recon": recon, "kl": kl, "kl_per_dim": kl_per_dim, "elbo": recon - kl}


def loss_from_terms(
  terms: dict[str, jnp.ndarray], beta: float | jnp.ndarray
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Batch-mean loss `-recon + beta * kl` and the batch means of every term."""
  metrics = jax.tree.map(lambda v: v.mean(axis=0), terms)
  loss = -metrics["recon"] + beta * metrics["kl"]
  return loss, {"loss": loss, **metrics}
