"""The minibatch estimates of q(z) and the beta-TCVAE decomposition, and the beta-TCVAE model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.collectives import LOCAL
from vae_jax.errors import ConfigError
from vae_jax.losses import distributions, total_correlation
from vae_jax.models import build_model
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps


def _posterior_batch(rng, mu):
  """Samples z ~ N(mu, 0.5^2) with the posterior parameters of each row."""
  logvar = jnp.full_like(mu, math.log(0.25))
  return mu + 0.5 * jax.random.normal(rng, mu.shape), mu, logvar


def _factorised_batch(m=1000, d=3):
  # Independent dimensions, aggregate posterior N(2, 1.25) per dimension: dimension-wise KL > 0.
  mu = 2.0 + jax.random.normal(jax.random.key(0), (m, d))
  return _posterior_batch(jax.random.key(1), mu)


def _correlated_batch(m=1000, d=3):
  # Every dimension's mean is the same draw u: z lies near the diagonal.
  u = jax.random.normal(jax.random.key(2), (m, 1))
  return _posterior_batch(jax.random.key(3), jnp.tile(10.0 * u, (1, d)))


_decomposition = jax.jit(total_correlation.kl_decomposition, static_argnums=(3, 4))


def _means(z, mu, logvar, n, estimator):
  return {k: float(v.mean()) for k, v in _decomposition(z, mu, logvar, n, estimator).items()}


@pytest.mark.parametrize("estimator,n", [("mws", 737_280), ("mss", 737_280), ("mss", 64)])
def test_terms_add_up_to_log_q_z_given_x_minus_log_p_z(estimator, n):
  z, mu, logvar = _posterior_batch(jax.random.key(4), jax.random.normal(jax.random.key(5), (64, 5)))
  terms = total_correlation.kl_decomposition(z, mu, logvar, n, estimator)
  mc_kl = distributions.gaussian_log_density(
    z, mu, logvar
  ) - distributions.standard_normal_log_density(z)
  total = terms["mutual_information"] + terms["total_correlation"] + terms["dimwise_kl"]
  np.testing.assert_allclose(total, mc_kl, rtol=1e-5, atol=1e-4)


def test_both_estimators_are_the_batch_mixture_when_the_batch_is_the_dataset():
  # MWS with N = 1 weights every posterior 1/M; so does MSS with N = M.
  z, mu, logvar = _factorised_batch(m=256)
  mws = total_correlation.aggregate_log_densities(z, mu, logvar, 1, "mws")
  mss = total_correlation.aggregate_log_densities(z, mu, logvar, 256, "mss")
  mixture = jax.nn.logsumexp(
    total_correlation.pairwise_log_density(z, mu, logvar).sum(-1), axis=1
  ) - math.log(256)
  for a, b in zip(mws, mss, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  np.testing.assert_allclose(mws[0], mixture, rtol=1e-5)


def test_factorised_batch_has_near_zero_tc_and_mws_adds_its_constant():
  z, mu, logvar = _factorised_batch()
  m, d = z.shape
  mixture = _means(z, mu, logvar, m, "mss")  # The batch is the dataset: log q(z) is exact.
  stratified = _means(z, mu, logvar, 10**6, "mss")  # Leave-one-out: the own posterior ~ 1e-6.
  for terms in (mixture, stratified):
    assert terms["dimwise_kl"] > 5.0  # d * KL(N(2, 1.25) || N(0, 1)) = 6.0 nats.
    assert abs(terms["total_correlation"]) < 0.02 * terms["dimwise_kl"]
  n = 737_280
  mws = _means(z, mu, logvar, n, "mws")
  np.testing.assert_allclose(
    mws["total_correlation"] - mixture["total_correlation"], (d - 1) * math.log(n), rtol=1e-5
  )
  np.testing.assert_allclose(
    mws["mutual_information"] - mixture["mutual_information"], math.log(n), rtol=1e-4
  )


@pytest.mark.parametrize("estimator,n", [("mss", 1000), ("mss", 10**6), ("mws", 737_280)])
def test_correlated_batch_has_clearly_positive_tc(estimator, n):
  factorised = _means(*_factorised_batch(), n, estimator)["total_correlation"]
  correlated = _means(*_correlated_batch(), n, estimator)["total_correlation"]
  # Gaussian approximation: TC = (3 log 100.25 - log(300.25 * 0.25^2)) / 2 = 5.44 nats.
  assert correlated - factorised > 4.5
  if estimator == "mss":
    assert abs(correlated - 5.44) < 0.4


def test_btcvae_batch_loss_reweights_the_monte_carlo_kl(dataset):
  config = tiny_config(**{"model.name": "btcvae"})
  model = build_model(config.model, dataset.spec)
  params = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec).params
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(32, 0).batch(0))
  keys = prng.example_keys(jax.random.key(1), 0, jnp.arange(32))
  _, outputs = jax.jit(lambda p: steps.forward_terms(model, p, batch, keys, config))(params)

  def batch_loss(alpha, beta, gamma):
    weighted = model.clone(alpha=alpha, beta=beta, gamma=gamma)
    return weighted.apply(
      {"params": params}, outputs, LOCAL, jax.random.key(2), method=weighted.batch_loss
    )

  assert float(batch_loss(1.0, 1.0, 1.0)[0]) == 0.0  # The plain ELBO.
  mc_kl = np.mean(outputs.log_q_z - outputs.log_p_z)
  np.testing.assert_allclose(batch_loss(2.0, 2.0, 2.0)[0], mc_kl, rtol=1e-4)  # One more MC KL.
  loss, metrics = batch_loss(1.0, 6.0, 1.0)
  np.testing.assert_allclose(loss, 5.0 * metrics["tc_estimate"], rtol=1e-6)
  np.testing.assert_allclose(batch_loss(3.0, 1.0, 1.0)[0], 2.0 * metrics["mutual_information"])
  np.testing.assert_allclose(batch_loss(1.0, 1.0, 0.0)[0], -metrics["dimwise_kl"])


def test_btcvae_metrics_do_not_depend_on_the_device_count(dataset):
  config = tiny_config(**{"model.name": "btcvae"})
  model = build_model(config.model, dataset.spec)
  tx = optax.sgd(1e-3)
  rng = jax.random.key(0)
  state = jax.device_get(state_lib.init_state(model, tx, rng, dataset.spec))
  batch = dataset.train_stream(32, 0).batch(0)
  results = []
  for num_devices in (1, 4):
    mesh = meshes.make_mesh(jax.devices()[:num_devices])
    train_step = steps.make_train_step(model, tx, config, mesh)
    local = jax.device_put(state, meshes.replicated(mesh))
    _, metrics = train_step(local, jax.device_put(batch, meshes.batch_sharded(mesh)), rng)
    results.append(jax.device_get(metrics))
  for name in ("tc_estimate", "mutual_information", "dimwise_kl", "loss"):
    np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-5)


@pytest.mark.parametrize(
  "overrides,field",
  [
    ({"model.btcvae.estimator": "kde"}, "model.btcvae.estimator"),
    ({"model.btcvae.beta": -1.0}, "model.btcvae.beta"),
    ({"objective.estimator": "iwae", "objective.num_samples": 2}, "objective.estimator"),
  ],
)
def test_invalid_btcvae_config_names_the_field(overrides, field):
  config = tiny_config(**{"model.name": "btcvae", **overrides})
  with pytest.raises(ConfigError, match=field):
    configuration.validate(config, 1)


def test_the_aggregate_posterior_averages_over_the_dataset_s_training_examples(dataset):
  config = tiny_config(**{"model.name": "btcvae"})
  assert build_model(config.model, dataset.spec).dataset_size == len(dataset.train_images)
  assert "dataset_size" not in config.model.btcvae


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_padding_rows_are_left_out_of_the_estimates(estimator):
  z, mu, logvar = _correlated_batch(m=48)
  m = len(z)
  real = total_correlation.kl_decomposition(z[:40], mu[:40], logvar[:40], 1000, estimator)
  pad = lambda v: jnp.concatenate([v[:40], jnp.repeat(v[39:40], m - 40, axis=0)])  # noqa: E731
  mask = (jnp.arange(m) < 40).astype(jnp.float32)
  padded = total_correlation.kl_decomposition(pad(z), pad(mu), pad(logvar), 1000, estimator, mask)
  for k in real:
    np.testing.assert_allclose(padded[k][:40], real[k], rtol=1e-5, atol=1e-5, err_msg=k)
