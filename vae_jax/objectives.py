"""Reconstruction log-likelihoods, the analytic Gaussian KL, and the (beta-)ELBO loss.

All quantities are per example, in nats. `recon` is E_q[log p(x|z)] (a log-likelihood, so <= 0 for
binary data), `kl` is KL(q(z|x) || N(0, I)), `elbo = recon - kl`, and the loss is
`-recon + penalty(kl)`: `beta_t * kl` (beta-VAE, with an optional warm-up or cyclical schedule
beta_t, and optional free bits) or `gamma * |kl - C_t|` (controlled capacity).
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import kl_schedules

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
KL_PENALTIES = ("beta", "capacity")
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


def kl_penalty(
  kl_per_dim: jnp.ndarray, config: ml_collections.ConfigDict, step
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The KL part of the loss from the batch-mean KL per dimension, and what to log about it.

  Free bits (Kingma et al. 2016) floor each dimension's batch-mean KL at `free_bits` nats before
  summing, so dimensions below the floor get no gradient from the KL term.

  Returns:
    (penalty, {'beta': effective beta} or {'capacity': C_t}).
  """
  kl_per_dim = jnp.asarray(kl_per_dim)
  if config.free_bits > 0:
    kl_per_dim = jnp.maximum(kl_per_dim, config.free_bits)
  kl = kl_per_dim.sum(axis=-1)
  if config.kl_penalty == "capacity":
    c = kl_schedules.capacity(step, config)
    return config.capacity_gamma * jnp.abs(kl - c), {"capacity": c}
  if config.kl_penalty != "beta":
    raise ValueError(f"Unknown kl_penalty {config.kl_penalty!r}; choose one of {KL_PENALTIES}.")
  beta = config.beta * kl_schedules.kl_weight(step, config)
  return beta * kl, {"beta": beta}


def loss_from_terms(
  terms: dict[str, jnp.ndarray],
  config: ml_collections.ConfigDict,
  step,
  global_mean: Callable[[jnp.ndarray], jnp.ndarray] = lambda v: v,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Batch-mean loss `-recon + kl_penalty` and the batch means of every term.

  Args:
    terms: per-example terms from `per_example_terms`.
    config: `config.objective`.
    step: training step (for schedules).
    global_mean: turns a per-device batch mean into the global batch mean (`lax.pmean` over the
      data axis inside a data-parallel step). The KL penalty is nonlinear in the batch mean, so it
      must see the global batch for results not to depend on the device count.
  """
  metrics = jax.tree.map(lambda v: v.mean(axis=0), terms)
  penalty, extras = kl_penalty(global_mean(metrics["kl_per_dim"]), config, step)
  loss = -metrics["recon"] + penalty
  return loss, {"loss": loss, **metrics, **extras}
