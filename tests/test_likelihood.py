"""The importance-weighted log-likelihood against a linear-Gaussian model with a closed-form p(x).

p(z) = N(0, I), p(x|z) = N(z W + b, sigma^2 I), so p(x) = N(x; b, W^T W + sigma^2 I). With
orthogonal rows of W the exact posterior is a diagonal Gaussian whose mean is linear in x, so a
linear Gaussian encoder can be exact (every importance weight equals p(x)) or perturbed.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_config
from vae_jax.evaluation import likelihood
from vae_jax.losses import distributions
from vae_jax.models import Capabilities, Model, ModelOutput, Posterior
from vae_jax.training import mesh as meshes

SHAPE = (4, 4, 1)
D, LATENT, SIGMA = 16, 3, 0.1


class LinearGaussian(Model):
  """The model contract with a linear Gaussian encoder and decoder (parameters set by the test)."""

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True)

  def setup(self):  # noqa: D102
    self.A = self.param("A", nn.initializers.zeros, (D, LATENT))
    self.c = self.param("c", nn.initializers.zeros, (LATENT,))
    self.logvar = self.param("logvar", nn.initializers.zeros, (LATENT,))
    self.W = self.param("W", nn.initializers.zeros, (LATENT, D))
    self.b = self.param("b", nn.initializers.zeros, (D,))

  def encode(self, x, y=None):
    mu = x.reshape(x.shape[0], -1) @ self.A + self.c
    return Posterior(mu, jnp.broadcast_to(self.logvar, mu.shape))

  def decode(self, z, y=None):
    return (z @ self.W + self.b).reshape(z.shape[0], *SHAPE)

  def __call__(self, x, keys, y=None):
    post = self.encode(x)
    mu, logvar = post.mean, post.logvar
    eps = jax.vmap(lambda k: jax.random.normal(k, (LATENT,)))(keys)
    z = mu + jnp.exp(0.5 * logvar) * eps
    return ModelOutput(
      out=self.decode(z),
      z=z,
      kl_per_dim=distributions.kl_standard_normal(mu, logvar),
      log_q_z=distributions.gaussian_log_density(z, mu, logvar),
      log_p_z=distributions.standard_normal_log_density(z),
    )


def _problem(n: int = 100):
  """Decoder, exact and perturbed encoders, uint8 data and the exact log p(x) of that data."""
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(D, LATENT)))
  scales = np.array([0.2, 0.12, 0.06])
  w = scales[:, None] * u.T  # Orthogonal rows: W W^T = diag(scales^2).
  b = rng.uniform(0.4, 0.6, D)
  post_var = 1.0 / (1.0 + scales**2 / SIGMA**2)
  a = (w.T * post_var) / SIGMA**2  # Posterior mean (x - b) W^T Sigma / sigma^2 = x A + c.
  exact = {"A": a, "c": -b @ a, "logvar": np.log(post_var), "W": w, "b": b}
  perturbed = dict(
    exact, A=a + 0.3 * a.std() * rng.normal(size=a.shape), logvar=exact["logvar"] + 1
  )
  x = rng.normal(size=(n, LATENT)) @ w + b + SIGMA * rng.normal(size=(n, D))
  images = np.clip(np.round(x * 255), 0, 255).astype(np.uint8).reshape(n, *SHAPE)
  xq = images.reshape(n, D) / 255.0
  cov = w.T @ w + SIGMA**2 * np.eye(D)
  diff = xq - b
  _, logdet = np.linalg.slogdet(cov)
  maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
  log_px = -0.5 * (maha + logdet + D * np.log(2 * np.pi))
  return exact, perturbed, images, log_px


EXACT, PERTURBED, IMAGES, LOG_PX = _problem()
CONFIG = tiny_config(
  **{"data.binarize": "none", "model.likelihood": "gaussian", "model.gaussian_sigma": SIGMA}
)


def _log_p(params, k, chunk=None, num_devices=4, images=IMAGES):
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  model_vars = jax.device_put(
    {"params": jax.tree.map(jnp.float32, params)}, meshes.replicated(mesh)
  )
  return likelihood.log_likelihoods(
    LinearGaussian(),
    model_vars,
    images,
    None,
    CONFIG,
    mesh,
    likelihood.evaluation_key(CONFIG.seed),
    num_samples=k,
    chunk=chunk or k,
    batch_size=40,
  )


def test_exact_posterior_gives_exact_log_likelihood_from_one_sample():
  # q = p(z|x) makes every weight p(x, z) / p(z|x) = p(x): no Monte Carlo error at all, so only
  # float32 rounding of ~16-dim Gaussian densities remains.
  np.testing.assert_allclose(_log_p(EXACT, 1), LOG_PX, atol=2e-4)
  np.testing.assert_allclose(_log_p(EXACT, 7, chunk=3), LOG_PX, atol=2e-4)


def test_estimate_is_a_lower_bound_that_converges_as_k_grows():
  estimates = {k: _log_p(PERTURBED, k, chunk=250) for k in (1, 10, 100, 1000)}
  gaps = {k: float(np.mean(LOG_PX - est)) for k, est in estimates.items()}
  for k, est in estimates.items():
    # E[log p̂_k] <= log p(x): the mean gap over 100 examples may dip below 0 only by Monte Carlo
    # noise, bounded here by 3 standard errors of the per-example gaps.
    stderr = np.std(LOG_PX - est, ddof=1) / np.sqrt(len(est))
    assert gaps[k] >= -3 * stderr, (k, gaps[k], stderr)
  assert gaps[1] > 1.0, gaps  # The perturbed encoder is far from the posterior...
  assert gaps[1] > gaps[10] > gaps[100] > gaps[1000], gaps  # ...and k samples close the gap
  assert gaps[1000] < 0.02 * gaps[1], gaps  # (Burda et al.: the gap shrinks like 1/k).


def test_chunking_and_device_count_do_not_change_the_estimate():
  reference = _log_p(PERTURBED, 10, chunk=10, num_devices=1)
  np.testing.assert_allclose(_log_p(PERTURBED, 10, chunk=3, num_devices=1), reference, atol=1e-5)
  np.testing.assert_allclose(_log_p(PERTURBED, 10, chunk=10, num_devices=4), reference, atol=1e-5)
  np.testing.assert_allclose(_log_p(PERTURBED, 10, chunk=4, num_devices=4), reference, atol=1e-5)


def test_estimate_reports_nats_bits_and_the_elbo():
  mesh = meshes.make_mesh()
  model_vars = jax.device_put(
    {"params": jax.tree.map(jnp.float32, PERTURBED)}, meshes.replicated(mesh)
  )
  out = likelihood.estimate(
    LinearGaussian(),
    model_vars,
    IMAGES[:60],
    None,
    CONFIG,
    mesh,
    num_samples=50,
    chunk=20,
    batch_size=40,
  )
  assert out["num_examples"] == 60 and out["iw_samples"] == 50
  assert out["iw_nll"] == pytest.approx(-np.mean(_log_p(PERTURBED, 50, chunk=20)[:60]), abs=1e-4)
  assert out["iw_nll_bits_per_dim"] == pytest.approx(out["iw_nll"] / (D * np.log(2)))
  # The single-sample ELBO (analytic KL) of the perturbed encoder is a looser bound than 50 samples.
  assert out["iw_nll"] < out["nll_elbo"] - 0.5, out
  assert out["iw_nll"] > -np.mean(LOG_PX[:60]) - 3 * out["iw_nll_stderr"]
