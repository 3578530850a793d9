"""Minibatch estimates of the aggregate posterior and the KL decomposition of beta-TCVAE.

Chen et al. 2018 ("Isolating Sources of Disentanglement in VAEs") split the data-averaged KL term
of the ELBO with the aggregate posterior q(z) = (1/N) sum_n q(z|x_n) of a dataset of N examples:

  E_x KL(q(z|x) || p(z)) = MI + TC + dimension-wise KL, per sample z ~ q(z|x) the differences
  MI = log q(z|x) - log q(z), TC = log q(z) - sum_j log q(z_j), dwKL = sum_j log q(z_j) - log p(z).

The three terms of one sample add up to log q(z|x) - log p(z) whatever the estimates of log q(z)
and log q(z_j). Both come from a batch of M samples z_i ~ q(z|x_i):
log q(z_i) ~ logsumexp_j [log q(z_i|x_j) + log w_ij] (and the same per dimension), with weights

- 'mws', minibatch weighted sampling (the paper's estimator and code): w_ij = 1 / (N M);
- 'mss', minibatch stratified sampling: the example's own posterior gets 1/N and each of the other
  M - 1 gets (N - 1) / (N (M - 1)), an unbiased estimate of q(z_i) given z_i.

The MWS normalisation 1/(N M) sits log N below the batch's own mixture (1/M) sum_j q(z_i|x_j), so
MWS values carry constants: relative to that mixture, MI gains log N, TC gains (D - 1) log N and the
dimension-wise KL loses D log N (D = latent size). A factorised batch thus has MWS TC near
(D - 1) log N, not 0. Gradients do not see the constants (disentanglement_lib drops them); the
'mss' values are the interpretable ones.
"""

import math

import jax
import jax.numpy as jnp

from vae_jax.losses import distributions

ESTIMATORS = ("mws", "mss")


def pairwise_log_density(z: jnp.ndarray, mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """log q(z_i,d | x_j) per dimension for every pair of the batch, [M, M, D] indexed [i, j, d]."""
  z, mu, logvar = z[:, None, :], mu[None, :, :], logvar[None, :, :]
  return -0.5 * (jnp.square(z - mu) * jnp.exp(-logvar) + logvar + math.log(2.0 * math.pi))


def log_weights(
  rows: jnp.ndarray, mask: jnp.ndarray | int, dataset_size: int, estimator: str
) -> jnp.ndarray:
  """log w_ij [len(rows), M]: the weight of posterior j in the estimate of q(z_i).

  Args:
    rows: the batch positions of the samples z_i (an example's own posterior is special to the
      stratified estimator).
    mask: [M] 1 for the batch's real examples, 0 for padding, which gets weight 0 (log -inf); the
      weights are those of a batch of M = mask.sum() real examples. An int M: a batch of M, all
      real (the weights are then computed in double precision).
    dataset_size: N.
    estimator: one of `ESTIMATORS` (see the module docstring).
  """
  static = isinstance(mask, int)
  xp = math if static else jnp
  m, size = (mask, mask) if static else (jnp.sum(mask), mask.shape[0])
  own = rows[:, None] == jnp.arange(size)[None, :]
  if estimator == "mws":
    log_w = jnp.broadcast_to(-xp.log(dataset_size * m), own.shape)
  elif estimator == "mss":
    other = -math.inf  # N = 1: the batch's own example is the whole dataset.
    if dataset_size > 1:
      others = max(m - 1, 1) if static else jnp.maximum(m - 1, 1)
      other = math.log(dataset_size - 1) - xp.log(dataset_size * others)
    log_w = jnp.where(own, -math.log(dataset_size), other)
  else:
    raise ValueError(
      f"Unknown total-correlation estimator {estimator!r}; choose one of {ESTIMATORS}."
    )
  return log_w if static else jnp.where(mask[None, :] > 0, log_w, -jnp.inf)


def aggregate_log_densities(
  z: jnp.ndarray,
  mu: jnp.ndarray,
  logvar: jnp.ndarray,
  dataset_size: int,
  estimator: str = "mws",
  mask: jnp.ndarray | None = None,
  rows: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Estimates of log q(z_i) [b] and of log q(z_i,d) [b, D] for samples z_i of the batch.

  Args:
    z: samples [b, D], z_i ~ q(z|x_i): the whole batch, or some of its examples (`rows`).
    mu: posterior means [M, D] of the whole batch (the mixture's components).
    logvar: posterior log-variances [M, D].
    dataset_size: N, the number of examples q(z) averages over.
    estimator: one of `ESTIMATORS`.
    mask: [M] 1 for real examples, 0 for padding (left out of every mixture); None: all real.
    rows: [b] the batch positions of z's examples; None: z is the whole batch (b = M).
  """
  rows = jnp.arange(z.shape[0]) if rows is None else rows
  mask = mu.shape[0] if mask is None else mask
  pair = pairwise_log_density(z, mu, logvar)
  log_w = log_weights(rows, mask, dataset_size, estimator).astype(pair.dtype)
  log_q_z = jax.nn.logsumexp(pair.sum(axis=-1) + log_w, axis=1)
  log_q_zd = jax.nn.logsumexp(pair + log_w[:, :, None], axis=1)
  return log_q_z, log_q_zd


def kl_decomposition(
  z: jnp.ndarray,
  mu: jnp.ndarray,
  logvar: jnp.ndarray,
  dataset_size: int,
  estimator: str = "mws",
  mask: jnp.ndarray | None = None,
  rows: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
  """Per-sample MI, TC and dimension-wise KL [b] (args as `aggregate_log_densities`).

  Returns:
    Dict with `mutual_information`, `total_correlation` and `dimwise_kl`; their sum is
    log q(z|x) - log p(z) of each sample.
  """
  log_q_z, log_q_zd = aggregate_log_densities(z, mu, logvar, dataset_size, estimator, mask, rows)
  own = slice(None) if rows is None else rows
  log_q_z_given_x = distributions.gaussian_log_density(z, mu[own], logvar[own])
  log_prod_q_zd = log_q_zd.sum(axis=-1)
  return {
    "mutual_information": log_q_z_given_x - log_q_z,
    "total_correlation": log_q_z - log_prod_q_zd,
    "dimwise_kl": log_prod_q_zd - distributions.standard_normal_log_density(z),
  }
