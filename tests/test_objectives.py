import math

import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import objectives


def test_kl_per_dimension_matches_hand_computed_values():
  mu = jnp.array([[1.0, 0.0, 0.0, 2.0]])
  logvar = jnp.array([[0.0, math.log(4.0), 0.0, math.log(0.25)]])
  expected = [
    0.5,
    0.5 * (4.0 - 1.0 - math.log(4.0)),
    0.0,
    0.5 * (4.0 + 0.25 - 1.0 - math.log(0.25)),
  ]
  np.testing.assert_allclose(objectives.kl_standard_normal(mu, logvar)[0], expected, rtol=1e-6)


def test_bernoulli_log_likelihood_from_logits():
  x = jnp.array([[[[1.0], [0.0]], [[1.0], [0.5]]]])  # one 2x2 image
  logits = jnp.array([[[[0.0], [2.0]], [[-1.0], [3.0]]]])
  p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0, 3.0])))
  xs = np.array([1.0, 0.0, 1.0, 0.5])
  expected = np.sum(xs * np.log(p) + (1 - xs) * np.log(1 - p))
  np.testing.assert_allclose(objectives.bernoulli_log_likelihood(x, logits), [expected], rtol=1e-6)


def test_bernoulli_is_stable_for_extreme_logits():
  x = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  logits = jnp.array([[200.0, -200.0, -200.0, 200.0]])
  ll = objectives.bernoulli_log_likelihood(x, logits)
  np.testing.assert_allclose(ll, [-400.0], rtol=1e-6)  # sigmoid+log would give -inf


def test_gaussian_fixed_sigma_is_scaled_mse():
  x = jnp.array([[0.0, 1.0, 2.0]])
  mean = jnp.array([[1.0, 1.0, 0.0]])
  sigma = 0.5
  expected = -0.5 * (1 + 0 + 4) / sigma**2 - 3 * math.log(sigma) - 1.5 * math.log(2 * math.pi)
  got = objectives.reconstruction_log_likelihood(x, {"out": mean}, "gaussian", sigma)
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_gaussian_learned_sigma_reads_log_sigma_from_outputs():
  x = jnp.array([[0.0, 2.0]])
  outputs = {"out": jnp.zeros((1, 2)), "log_sigma": jnp.array(math.log(2.0))}
  expected = -0.5 * 4 / 4 - 2 * math.log(2.0) - math.log(2 * math.pi)
  got = objectives.reconstruction_log_likelihood(x, outputs, "gaussian_learned")
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_unknown_likelihood_raises():
  with pytest.raises(ValueError, match="Unknown likelihood"):
    objectives.reconstruction_log_likelihood(jnp.zeros((1, 2)), {"out": jnp.zeros((1, 2))}, "x")


def test_loss_is_minus_recon_plus_beta_kl_and_elbo_is_recon_minus_kl():
  x = jnp.ones((2, 3))
  outputs = {
    "out": jnp.zeros((2, 3)),
    "mu": jnp.array([[1.0, 0.0], [0.0, 0.0]]),
    "logvar": jnp.zeros((2, 2)),
    "z": jnp.zeros((2, 2)),
  }
  terms = objectives.per_example_terms(x, outputs, "bernoulli")
  recon = 3 * math.log(0.5)
  np.testing.assert_allclose(terms["recon"], [recon, recon], rtol=1e-6)
  np.testing.assert_allclose(terms["kl"], [0.5, 0.0], rtol=1e-6)
  np.testing.assert_allclose(terms["elbo"], [recon - 0.5, recon], rtol=1e-6)
  loss, metrics = objectives.loss_from_terms(terms, beta=4.0)
  np.testing.assert_allclose(loss, -recon + 4.0 * 0.25, rtol=1e-6)
  assert metrics["kl_per_dim"].shape == (2,)
  np.testing.assert_allclose(metrics["kl_per_dim"], [0.25, 0.0], rtol=1e-6)


def test_autoencoder_outputs_have_zero_kl():
  outputs = {"out": jnp.zeros((2, 3)), "z": jnp.ones((2, 5))}
  terms = objectives.per_example_terms(jnp.ones((2, 3)), outputs, "bernoulli")
  np.testing.assert_array_equal(terms["kl"], [0.0, 0.0])
  assert terms["kl_per_dim"].shape == (2, 5)
