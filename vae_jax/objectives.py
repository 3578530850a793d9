"""Reconstruction log-likelihoods, the analytic Gaussian KL, and the (beta-)ELBO loss.

All quantities are per example, in nats. `recon` is E_q[log p(x|z)] (a log-likelihood, so <= 0 for
binary data), `kl` is KL(q(z|x) || N(0, I)), `elbo = recon - kl`, and the loss is
`-recon + penalty(kl)`: `beta_t * kl` (beta-VAE, with an optional warm-up or cyclical schedule
beta_t, and optional free bits) or `gamma * |kl - C_t|` (controlled capacity). With
`estimator='iwae'` the loss is minus the k-sample importance-weighted bound instead.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import kl_schedules
from vae_jax.parallel import LOCAL, Collectives

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
KL_PENALTIES = ("beta", "capacity")
ESTIMATORS = ("elbo", "iwae")
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


def gaussian_log_density(z: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """log N(z | mu, diag(exp(logvar))) summed over the last axis."""
  return jnp.sum(-0.5 * (jnp.square(z - mu) * jnp.exp(-logvar) + logvar + _LOG_2PI), axis=-1)


def standard_normal_log_density(z: jnp.ndarray) -> jnp.ndarray:
  """log N(z | 0, I) summed over the last axis."""
  return jnp.sum(-0.5 * (jnp.square(z) + _LOG_2PI), axis=-1)


def logmeanexp(v: jnp.ndarray, axis: int = 0) -> jnp.ndarray:
  """log(mean(exp(v))) along `axis`, computed stably."""
  return jax.nn.logsumexp(v, axis=axis) - math.log(v.shape[axis])


def per_example_terms(
  x: jnp.ndarray,
  outputs: dict,
  likelihood: str,
  gaussian_sigma: float = 1.0,
  with_log_weight: bool = False,
) -> dict[str, jnp.ndarray]:
  """Per-example objective terms of one posterior sample, from a model's outputs.

  A model reports its KL in one of three ways: `kl_per_dim` (analytic, e.g. a diagonal-Gaussian
  posterior), or `log_q_z` and `log_p_z` of its sample (a single-sample Monte Carlo KL, e.g. a
  flow posterior), or neither (the deterministic autoencoder: zero KL). Per-example entries of the
  model's `extra_terms` (e.g. a VQ-VAE's codebook loss `aux_loss`, a hierarchical VAE's KL per
  layer) are passed through.

  Args:
    x: the (preprocessed) images.
    outputs: the model's forward-pass outputs.
    likelihood: one of `LIKELIHOODS`.
    gaussian_sigma: observation std of the fixed-sigma Gaussian.
    with_log_weight: also return `log_weight` = log p(x|z) + log p(z) - log q(z|x), the importance
      weight that the IWAE objective and the importance-weighted likelihood average (needs a model
      that outputs `log_q_z` and `log_p_z`).

  Returns:
    Dict with `recon`, `kl`, `elbo` [batch], `kl_per_dim` [batch, d] when the model gives it,
    `log_weight` when asked, and the model's extra terms.
  """
  recon = reconstruction_log_likelihood(x, outputs, likelihood, gaussian_sigma)
  terms = {"recon": recon}
  if "kl_per_dim" in outputs:
    terms["kl_per_dim"] = outputs["kl_per_dim"]
    terms["kl"] = outputs["kl_per_dim"].sum(axis=-1)
  elif "log_q_z" in outputs:
    terms["kl"] = outputs["log_q_z"] - outputs["log_p_z"]
  else:
    terms["kl"] = jnp.zeros_like(recon)
  terms["elbo"] = recon - terms["kl"]
  if with_log_weight:
    if "log_q_z" not in outputs:
      raise ValueError("Importance weights need a model that outputs log_q_z and log_p_z.")
    terms["log_weight"] = recon + outputs["log_p_z"] - outputs["log_q_z"]
  terms.update(outputs.get("extra_terms", {}))
  return terms


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
  # jnp.where rather than `if`: free_bits may be a traced value in a vectorized sweep.
  floored = jnp.maximum(kl_per_dim, config.free_bits)
  kl_per_dim = jnp.where(config.free_bits > 0, floored, kl_per_dim)
  kl = kl_per_dim.sum(axis=-1)
  if config.kl_penalty == "capacity":
    c = kl_schedules.capacity(step, config)
    return config.capacity_gamma * jnp.abs(kl - c), {"capacity": c}
  if config.kl_penalty != "beta":
    raise ValueError(f"Unknown kl_penalty {config.kl_penalty!r}; choose one of {KL_PENALTIES}.")
  beta = config.beta * kl_schedules.kl_weight(step, config)
  return beta * kl, {"beta": beta}


def importance_weighted_terms(sample_terms: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
  """Combines the terms of k posterior samples per example (leading axis k) into per-example terms.

  `iwae` is the importance-weighted bound log mean_k w_k (Burda et al. 2015); the other terms are
  averaged over the k samples (so `elbo` is the k-sample Monte Carlo ELBO).
  """
  terms = {k: v.mean(axis=0) for k, v in sample_terms.items() if k != "log_weight"}
  terms["iwae"] = logmeanexp(sample_terms["log_weight"], axis=0)
  return terms


def loss_from_terms(
  terms: dict[str, jnp.ndarray],
  config: ml_collections.ConfigDict,
  step,
  collectives: Collectives = LOCAL,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Batch-mean loss and the batch means of every term.

  The loss is `-recon + kl_penalty` (ELBO-style estimators) or `-iwae` (the IWAE objective), plus
  the model's `aux_loss` term when it has one.

  Args:
    terms: per-example terms from `per_example_terms` (or `importance_weighted_terms`).
    config: `config.objective`.
    step: training step (for schedules).
    collectives: global-batch reductions. The KL penalty is nonlinear in the batch mean, so inside
      a data-parallel step it must see the global batch (`collectives.mean` = `lax.pmean`) for
      results not to depend on the device count.
  """
  metrics = jax.tree.map(lambda v: v.mean(axis=0), terms)
  if config.estimator == "iwae":
    loss, extras = -metrics["iwae"], {}
  else:
    kl_parts = metrics["kl_per_dim"] if "kl_per_dim" in metrics else metrics["kl"][None]
    penalty, extras = kl_penalty(collectives.mean(kl_parts), config, step)
    loss = -metrics["recon"] + penalty
  if "aux_loss" in metrics:
    loss = loss + metrics["aux_loss"]
  return loss, {"loss": loss, **metrics, **extras}
