"""Latent-space diagnostics computed from arrays of posterior parameters.

`active_units` counts the latent dimensions whose posterior mean varies across the data
(Burda et al., 2015); `posterior_summary` reports the analytic KL to the N(0, I) prior and the
posterior variance, per dimension and overall.
"""

import numpy as np


def active_units(posterior_means: np.ndarray, threshold: float = 0.01) -> dict:
  """Active units: dimensions d with Cov_x(E_q(z|x)[z_d]) > threshold (Burda et al., 2015).

  Args:
    posterior_means: E_q(z|x)[z] for a set of inputs x, shape [n, d].
    threshold: A dimension is active when its variance over inputs exceeds it (0.01 in the paper).

  Returns:
    `num_active` (int), `active` (bool [d]) and `variances` (float [d], the variance over inputs of
    each dimension's posterior mean, with the 1/n normalisation).
  """
  means = np.asarray(posterior_means, dtype=np.float64)
  if means.ndim != 2:
    raise ValueError(f"posterior_means must be [n, d], got shape {means.shape}")
  variances = np.var(means, axis=0)
  active = variances > threshold
  return {"num_active": int(active.sum()), "active": active, "variances": variances}


def posterior_summary(mu: np.ndarray, logvar: np.ndarray) -> dict:
  """KL to the prior and posterior variance of diagonal Gaussian posteriors N(mu, exp(logvar)).

  Args:
    mu: Posterior means, shape [n, d].
    logvar: Posterior log-variances, shape [n, d].

  Returns:
    `kl_per_dim` (float [d], KL(N(mu_d, exp(logvar_d)) || N(0, 1)) in nats averaged over the n
    examples), `kl` (their sum: the mean KL per example), `mean_variance_per_dim` (float [d], the
    mean over examples of exp(logvar_d)) and `mean_variance` (the mean over examples and dims).
  """
  mu = np.asarray(mu, dtype=np.float64)
  logvar = np.asarray(logvar, dtype=np.float64)
  if mu.shape != logvar.shape or mu.ndim != 2:
    raise ValueError(f"mu and logvar must both be [n, d], got {mu.shape} and {logvar.shape}")
  variance = np.exp(logvar)
  kl_per_dim = np.mean(0.5 * (mu**2 + variance - 1.0 - logvar), axis=0)
  return {
    "kl_per_dim": kl_per_dim,
    "kl": float(kl_per_dim.sum()),
    "mean_variance_per_dim": variance.mean(axis=0),
    "mean_variance": float(variance.mean()),
  }
