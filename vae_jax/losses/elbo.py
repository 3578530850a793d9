"""Per-example ELBO and IWAE terms, and the (beta-)ELBO loss with its KL penalty.

All quantities are per example, in nats. `recon` is E_q[log p(x|z)] (a log-likelihood, so <= 0 for
binary data), `kl` is KL(q(z|x) || p(z)), `elbo = recon - kl`, and the loss is
`-recon + penalty(kl)`: `beta_t * kl` (beta-VAE, with an optional warm-up or cyclical schedule
beta_t, and optional free bits) or `gamma * |kl - C_t|` (controlled capacity). With
`estimator='iwae'` the loss is minus the k-sample importance-weighted bound instead.
"""

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.collectives import LOCAL, Collectives
from vae_jax.losses import kl_schedules
from vae_jax.losses.distributions import logmeanexp

KL_PENALTIES = ("beta", "capacity")
ESTIMATORS = ("elbo", "iwae")


def example_terms(
  recon: jax.Array,
  kl_per_dim: jax.Array | None = None,
  log_q_z: jax.Array | None = None,
  log_p_z: jax.Array | None = None,
  extra_terms: dict[str, jax.Array] | None = None,
  with_log_weight: bool = False,
) -> dict[str, jax.Array]:
  """Per-example objective terms of one posterior sample.

  A model reports its KL in one of three ways: `kl_per_dim` (analytic, e.g. a diagonal-Gaussian
  posterior), or `log_q_z` and `log_p_z` of its sample (a single-sample Monte Carlo KL, e.g. a
  flow posterior), or neither (the deterministic autoencoder: zero KL).

  Args:
    recon: log p(x|z) [batch].
    kl_per_dim: analytic KL per latent dimension [batch, d], or None.
    log_q_z: log q(z|x) of the sample [batch], or None.
    log_p_z: log p(z) of the sample [batch], or None.
    extra_terms: more per-example terms passed through (e.g. a VQ-VAE's `aux_loss`).
    with_log_weight: also return `log_weight` = log p(x|z) + log p(z) - log q(z|x), the importance
      weight that the IWAE objective and the importance-weighted likelihood average.

  Returns:
    Dict with `recon`, `kl`, `elbo` [batch], `kl_per_dim` when given, `log_weight` when asked,
    and the extra terms.
  """
  terms = {"recon": recon}
  if kl_per_dim is not None:
    terms["kl_per_dim"] = kl_per_dim
    terms["kl"] = kl_per_dim.sum(axis=-1)
  elif log_q_z is not None:
    terms["kl"] = log_q_z - log_p_z
  else:
    terms["kl"] = jnp.zeros_like(recon)
  terms["elbo"] = recon - terms["kl"]
  if with_log_weight:
    if log_q_z is None:
      raise ValueError("Importance weights need a model that outputs log_q_z and log_p_z.")
    terms["log_weight"] = recon + log_p_z - log_q_z
  terms.update(extra_terms or {})
  return terms


def kl_penalty(
  kl_per_dim: jax.Array, config: ml_collections.ConfigDict, step
) -> tuple[jax.Array, dict[str, jax.Array]]:
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


def importance_weighted_terms(sample_terms: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Combines the terms of k posterior samples per example (leading axis k) into per-example terms.

  `iwae` is the importance-weighted bound log mean_k w_k (Burda et al. 2015); the other terms are
  averaged over the k samples (so `elbo` is the k-sample Monte Carlo ELBO).
  """
  terms = {k: v.mean(axis=0) for k, v in sample_terms.items() if k != "log_weight"}
  terms["iwae"] = logmeanexp(sample_terms["log_weight"], axis=0)
  return terms


def loss_from_terms(
  terms: dict[str, jax.Array],
  config: ml_collections.ConfigDict,
  step,
  collectives: Collectives = LOCAL,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Batch-mean loss and the batch means of every term.

  The loss is `-recon + kl_penalty` (ELBO-style estimators) or `-iwae` (the IWAE objective), plus
  the model's `aux_loss` term when it has one.

  Args:
    terms: per-example terms from `example_terms` (or `importance_weighted_terms`).
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
