import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from vae_jax.losses import distributions, elbo, kl_schedules, likelihoods
from vae_jax.models import ModelOutput


def _objective(**overrides):
  config = default.get_config().objective
  config.update(overrides)
  return config


def test_kl_per_dimension_matches_hand_computed_values():
  mu = jnp.array([[1.0, 0.0, 0.0, 2.0]])
  logvar = jnp.array([[0.0, math.log(4.0), 0.0, math.log(0.25)]])
  expected = [
    0.5,
    0.5 * (4.0 - 1.0 - math.log(4.0)),
    0.0,
    0.5 * (4.0 + 0.25 - 1.0 - math.log(0.25)),
  ]
  np.testing.assert_allclose(distributions.kl_standard_normal(mu, logvar)[0], expected, rtol=1e-6)


def test_bernoulli_log_likelihood_from_logits():
  x = jnp.array([[[[1.0], [0.0]], [[1.0], [0.5]]]])  # one 2x2 image
  logits = jnp.array([[[[0.0], [2.0]], [[-1.0], [3.0]]]])
  p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0, 3.0])))
  xs = np.array([1.0, 0.0, 1.0, 0.5])
  expected = np.sum(xs * np.log(p) + (1 - xs) * np.log(1 - p))
  np.testing.assert_allclose(likelihoods.bernoulli_log_likelihood(x, logits), [expected], rtol=1e-6)


def test_bernoulli_is_stable_for_extreme_logits():
  x = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  logits = jnp.array([[200.0, -200.0, -200.0, 200.0]])
  ll = likelihoods.bernoulli_log_likelihood(x, logits)
  np.testing.assert_allclose(ll, [-400.0], rtol=1e-6)  # sigmoid+log would give -inf


def test_bernoulli_gradient_is_x_minus_sigmoid():
  x = jnp.array([[1.0, 0.0, 0.5, 1.0, 0.0]])
  logits = jnp.array([[0.0, 0.0, 2.0, -300.0, 300.0]])
  grad = jax.grad(lambda v: likelihoods.bernoulli_log_likelihood(x, v).sum())(logits)
  np.testing.assert_allclose(grad, x - jax.nn.sigmoid(logits), atol=1e-7)


def test_bernoulli_derivatives_match_the_log_sigmoid_form():
  x = jnp.array([[1.0, 0.0, 0.5, 0.3]])
  logits = jnp.array([[0.7, -1.5, 2.0, -0.2]])

  def reference(x, v):
    return jnp.sum(x * jax.nn.log_sigmoid(v) + (1.0 - x) * jax.nn.log_sigmoid(-v))

  def fused(x, v):
    return likelihoods.bernoulli_log_likelihood(x, v).sum()

  for argnums in (0, 1):
    np.testing.assert_allclose(
      jax.grad(fused, argnums)(x, logits), jax.grad(reference, argnums)(x, logits), rtol=1e-6
    )
  np.testing.assert_allclose(
    jax.hessian(fused, 1)(x, logits), jax.hessian(reference, 1)(x, logits), atol=1e-6
  )


def test_gaussian_fixed_sigma_is_scaled_mse():
  x = jnp.array([[0.0, 1.0, 2.0]])
  mean = jnp.array([[1.0, 1.0, 0.0]])
  sigma = 0.5
  expected = -0.5 * (1 + 0 + 4) / sigma**2 - 3 * math.log(sigma) - 1.5 * math.log(2 * math.pi)
  got = likelihoods.log_likelihood(x, mean, "gaussian", sigma)
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_gaussian_learned_sigma_reads_log_sigma_from_outputs():
  x = jnp.array([[0.0, 2.0]])
  outputs = ModelOutput(out=jnp.zeros((1, 2)), z=jnp.zeros((1, 1)), log_sigma=jnp.log(2.0))
  expected = -0.5 * 4 / 4 - 2 * math.log(2.0) - math.log(2 * math.pi)
  got = outputs.terms(x, "gaussian_learned")["recon"]
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_unknown_likelihood_raises():
  with pytest.raises(ValueError, match="Unknown likelihood"):
    likelihoods.log_likelihood(jnp.zeros((1, 2)), jnp.zeros((1, 2)), "x")


def test_loss_is_minus_recon_plus_beta_kl_and_elbo_is_recon_minus_kl():
  x = jnp.ones((2, 3))
  mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  outputs = ModelOutput(
    out=jnp.zeros((2, 3)),
    z=jnp.zeros((2, 2)),
    kl_per_dim=distributions.kl_standard_normal(mu, jnp.zeros((2, 2))),
  )
  terms = outputs.terms(x, "bernoulli")
  recon = 3 * math.log(0.5)
  np.testing.assert_allclose(terms["recon"], [recon, recon], rtol=1e-6)
  np.testing.assert_allclose(terms["kl"], [0.5, 0.0], rtol=1e-6)
  np.testing.assert_allclose(terms["elbo"], [recon - 0.5, recon], rtol=1e-6)
  loss, metrics = elbo.loss_from_terms(terms, _objective(beta=4.0), step=0)
  np.testing.assert_allclose(loss, -recon + 4.0 * 0.25, rtol=1e-6)
  np.testing.assert_allclose(metrics["beta"], 4.0)
  assert metrics["kl_per_dim"].shape == (2,)
  np.testing.assert_allclose(metrics["kl_per_dim"], [0.25, 0.0], rtol=1e-6)


def test_autoencoder_outputs_have_zero_kl():
  outputs = ModelOutput(out=jnp.zeros((2, 3)), z=jnp.ones((2, 5)))
  terms = outputs.terms(jnp.ones((2, 3)), "bernoulli")
  np.testing.assert_array_equal(terms["kl"], [0.0, 0.0])
  assert "kl_per_dim" not in terms


def test_linear_warmup_schedule_values():
  config = _objective(kl_schedule="linear", kl_warmup_steps=100)
  values = [float(kl_schedules.kl_weight(s, config)) for s in (0, 25, 100, 1000)]
  np.testing.assert_allclose(values, [0.0, 0.25, 1.0, 1.0])


def test_cyclical_schedule_values():
  config = _objective(kl_schedule="cyclical", kl_cycle_steps=100, kl_cycle_ratio=0.5)
  steps = (0, 25, 50, 99, 100, 125, 260)
  values = [float(kl_schedules.kl_weight(s, config)) for s in steps]
  np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0], atol=1e-6)


def test_constant_schedule_and_effective_beta():
  config = _objective(beta=4.0, kl_schedule="linear", kl_warmup_steps=10)
  penalty, extras = elbo.kl_penalty(jnp.array([1.0, 2.0]), config, step=5)
  np.testing.assert_allclose(extras["beta"], 2.0)
  np.testing.assert_allclose(penalty, 2.0 * 3.0)
  assert float(kl_schedules.kl_weight(7, _objective())) == 1.0


def test_capacity_target_and_loss_on_known_inputs():
  config = _objective(
    kl_penalty="capacity", capacity_max=25.0, capacity_steps=1000, capacity_gamma=10.0
  )
  np.testing.assert_allclose(
    [float(kl_schedules.capacity(s, config)) for s in (0, 400, 1000, 5000)], [0, 10, 25, 25]
  )
  penalty, extras = elbo.kl_penalty(jnp.array([3.0, 4.0]), config, step=400)
  np.testing.assert_allclose(extras["capacity"], 10.0)
  np.testing.assert_allclose(penalty, 10.0 * abs(7.0 - 10.0))
  penalty, _ = elbo.kl_penalty(jnp.array([20.0, 10.0]), config, step=400)
  np.testing.assert_allclose(penalty, 10.0 * 20.0)


def test_free_bits_floor_each_dimension_and_stop_their_gradient():
  config = _objective(beta=1.0, free_bits=0.5)
  penalty, _ = elbo.kl_penalty(jnp.array([0.1, 2.0, 0.4]), config, step=0)
  np.testing.assert_allclose(penalty, 0.5 + 2.0 + 0.5)
  grad = jax.grad(lambda k: elbo.kl_penalty(k, config, 0)[0])(jnp.array([0.1, 2.0, 0.4]))
  np.testing.assert_allclose(grad, [0.0, 1.0, 0.0])


def test_loss_reports_true_kl_while_free_bits_shape_the_loss():
  x = jnp.ones((1, 2))
  outputs = ModelOutput(out=jnp.zeros((1, 2)), z=jnp.zeros((1, 2)), kl_per_dim=jnp.zeros((1, 2)))
  terms = outputs.terms(x, "bernoulli")
  loss, metrics = elbo.loss_from_terms(terms, _objective(free_bits=0.25), step=0)
  assert float(metrics["kl"]) == 0.0
  np.testing.assert_allclose(loss, -float(metrics["recon"]) + 0.5, rtol=1e-6)


def test_monte_carlo_kl_and_log_weight_come_from_the_sample_densities():
  outputs = ModelOutput(
    out=jnp.zeros((2, 1)),
    z=jnp.zeros((2, 1)),
    log_q_z=jnp.array([-1.0, -2.0]),
    log_p_z=jnp.array([-3.0, -1.5]),
    extra_terms={"aux_loss": jnp.array([0.5, 0.25])},
  )
  terms = outputs.terms(jnp.ones((2, 1)), "bernoulli", with_log_weight=True)
  recon = math.log(0.5)
  np.testing.assert_allclose(terms["kl"], [2.0, -0.5])
  np.testing.assert_allclose(terms["log_weight"], [recon - 2.0, recon + 0.5], rtol=1e-6)
  np.testing.assert_allclose(terms["aux_loss"], [0.5, 0.25])
  loss, _ = elbo.loss_from_terms(terms, _objective(), step=0)
  np.testing.assert_allclose(loss, -recon + 0.75 + 0.375, rtol=1e-6)
  with pytest.raises(ValueError, match="log_q_z"):
    ModelOutput(out=jnp.zeros((1, 1)), z=jnp.zeros((1, 1))).terms(
      jnp.ones((1, 1)), "bernoulli", with_log_weight=True
    )


def test_reparameterized_sample_uses_one_key_per_example():
  keys = jax.random.split(jax.random.key(3), 4)
  mu, logvar = jnp.arange(8.0).reshape(4, 2), jnp.full((4, 2), math.log(4.0))
  z = distributions.reparameterize(mu, logvar, keys)
  eps = np.stack([np.asarray(jax.random.normal(k, (2,))) for k in keys])
  np.testing.assert_allclose(z, np.asarray(mu) + 2.0 * eps, rtol=1e-6)
  np.testing.assert_allclose(distributions.reparameterize(mu[2:], logvar[2:], keys[2:]), z[2:])
