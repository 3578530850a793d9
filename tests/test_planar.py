import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mnist_planar
from tests import helpers
from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.data.spec import DataSpec
from vae_jax.errors import ConfigError
from vae_jax.losses import distributions
from vae_jax.models import build_model
from vae_jax.models.planar import constrained_u, planar_flow, planar_step
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

D, K = 4, 3  # tiny_config's latent_dim; flow steps.


def _random(seed, *shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), shape)


def _slogdet(f, z, u, w, b):
  """(sign, log|det|) of the Jacobian dz'/dz of `f(z, u, w, b)[0]` for each example."""
  return jnp.linalg.slogdet(jax.vmap(jax.jacfwd(lambda *a: f(*a)[0]))(z, u, w, b))


@pytest.mark.parametrize("u_scale", [0.5, 5.0])
def test_step_log_det_is_the_jacobians_log_det_per_example(u_scale):
  n = 8
  z, u, w, b = _random(0, n, D), _random(1, n, D, scale=u_scale), _random(2, n, D), _random(3, n)
  _, log_det = planar_step(z, u, w, b)
  sign, numeric = _slogdet(planar_step, z, u, w, b)
  np.testing.assert_array_equal(sign, 1.0)  # The constraint keeps every step orientation-true.
  np.testing.assert_allclose(log_det, numeric, rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(numeric)).max() > 0.1  # Not volume-preserving: the check has teeth.


def test_the_constraint_holds_for_random_and_adversarial_u_and_w():
  n = 64
  w_random, u_random = _random(0, n, D), _random(1, n, D, scale=3.0)
  # Adversarial: u points against w, far beyond w^T u = -1, at tiny to large scales of w.
  direction = _random(2, 1, D)
  w_scales = jnp.array([1e-3, 1e-1, 1.0, 10.0, 1e2])[:, None, None]
  u_scales = jnp.array([1.5, 10.0, 1e3])[None, :, None]
  w_adv = jnp.broadcast_to(w_scales * direction, (5, 3, D)).reshape(-1, D)
  u_adv = (-u_scales / w_scales * direction).reshape(-1, D)
  w, u = jnp.concatenate([w_random, w_adv]), jnp.concatenate([u_random, u_adv])
  wu = np.asarray(jnp.sum(w * u, -1))
  assert wu.min() < -1000  # The raw u breaks invertibility.
  wu_hat = np.asarray(jnp.sum(w * constrained_u(u, w), -1), np.float64)
  # w^T u' = m(w^T u) = -1 + softplus(w^T u) >= -1, to float32 rounding of |w^T u|.
  m = -1.0 + np.logaddexp(0.0, wu.astype(np.float64))
  np.testing.assert_allclose(wu_hat, m, atol=1e-6 * (1 + np.abs(wu)).max())
  assert np.all(wu_hat >= -1.0 - 1e-6 * (1 + np.abs(wu)))
  # Where the constraint is inactive (w^T u well above -1) it changes u only a little.
  far = wu > 5
  np.testing.assert_allclose(wu_hat[far], wu[far] - 1.0, atol=1e-2)
  # A step stays finite for all of them, and w = 0 leaves u as it is (a translation).
  z, b = _random(3, len(w), D), _random(4, len(w))
  assert np.all(np.isfinite(planar_step(z, u, w, b)[1]))
  np.testing.assert_array_equal(constrained_u(u[:1], jnp.zeros((1, D))), u[:1])
  grad = jax.grad(lambda ww: constrained_u(u[:1], ww).sum())(jnp.zeros((1, D)))
  assert np.all(np.isfinite(grad))


def test_flow_composes_the_steps_and_sums_their_log_dets():
  n = 5
  z, u, w, b = _random(0, n, D), _random(1, n, K, D), _random(2, n, K, D), _random(3, n, K)
  z_k, log_det = planar_flow(z, u, w, b)
  expected, total = z, 0.0
  for k in range(K):
    expected, step_log_det = planar_step(expected, u[:, k], w[:, k], b[:, k])
    total = total + step_log_det
  np.testing.assert_allclose(z_k, expected, rtol=1e-6)
  np.testing.assert_allclose(log_det, total, rtol=1e-6)
  _, numeric = _slogdet(planar_flow, z, u, w, b)
  np.testing.assert_allclose(log_det, numeric, rtol=1e-4, atol=1e-5)


def _config(**overrides):
  return tiny_config(**{"model.name": "planar", "model.planar.flows": K, **overrides})


def _init(config=None, n=3):
  config = config or _config()
  model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
  x = jax.random.uniform(jax.random.key(5), (n, 28, 28, 1))
  keys = jax.random.split(jax.random.key(0), n)
  return model, model.init(jax.random.key(1), x, keys), x, keys


def test_log_q_of_the_flows_output_is_the_base_density_minus_the_log_dets():
  model, model_vars, x, keys = _init()
  out = model.apply(model_vars, x, keys)
  mu, logvar, u, w, b = model.apply(model_vars, x, method=model.posterior_params)
  assert u.shape == w.shape == (3, K, D) and b.shape == (3, K)
  z0 = mu + jnp.exp(0.5 * logvar) * distributions.standard_normal_noise(keys, D)
  np.testing.assert_allclose(out.stats["z0"], z0, rtol=1e-6)
  np.testing.assert_allclose(out.z, planar_flow(z0, u, w, b)[0], rtol=1e-6)
  sign, log_det = _slogdet(planar_flow, z0, u, w, b)
  np.testing.assert_array_equal(sign, 1.0)
  base = distributions.gaussian_log_density(z0, mu, logvar)
  np.testing.assert_allclose(out.log_q_z, base - log_det, rtol=1e-5)
  assert np.abs(np.asarray(log_det)).min() > 1e-2  # The flow changes the density.
  np.testing.assert_allclose(out.log_p_z, distributions.standard_normal_log_density(out.z))
  assert out.kl_per_dim is None and out.out.shape == x.shape
  np.testing.assert_allclose(out.terms(x, "bernoulli")["kl"], out.log_q_z - out.log_p_z)


def test_encode_is_the_flow_of_the_base_mean_and_generate_samples_the_prior():
  model, model_vars, x, _ = _init()
  mu, logvar, u, w, b = model.apply(model_vars, x, method=model.posterior_params)
  post = model.apply(model_vars, x, method=model.encode)
  np.testing.assert_allclose(post.mean, planar_flow(mu, u, w, b)[0], rtol=1e-6)
  np.testing.assert_array_equal(post.logvar, logvar)
  cold = model.apply(model_vars, jax.random.key(4), 5, None, 0.0, method=model.generate)
  decode_zero = model.apply(model_vars, jnp.zeros((5, D)), method=model.decode)
  np.testing.assert_allclose(cold, decode_zero, rtol=1e-6)
  warm = model.apply(model_vars, jax.random.key(4), 5, None, 1.0, method=model.generate)
  assert warm.shape == (5, 28, 28, 1) and not np.allclose(warm, cold)


def test_iwae_terms_are_the_importance_log_weights(dataset):
  config = _config(**{"objective.estimator": "iwae", "objective.num_samples": 5})
  model = build_model(config.model, dataset.spec)
  state = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec)
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(8, 0).batch(0))
  keys = prng.example_keys(jax.random.key(1), 0, jnp.arange(8))
  terms, _ = steps.forward_terms(model, state.params, batch, keys, config)
  weights = steps.importance_log_weights(
    model, {"params": state.params}, batch, keys, config, jnp.arange(5)
  )
  np.testing.assert_allclose(terms["iwae"], distributions.logmeanexp(weights), rtol=1e-5)


def test_a_few_steps_lower_the_loss(dataset):
  config = _config()
  mesh = meshes.make_mesh(jax.devices()[:1])
  model = build_model(config.model, dataset.spec)
  tx = optax.adam(1e-3)
  rng = jax.random.key(0)
  state = state_lib.init_state(model, tx, rng, dataset.spec)
  step = steps.make_train_step(model, tx, config, mesh)
  batch = jax.device_put(dataset.train_stream(32, 0).batch(0), meshes.batch_sharded(mesh))
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("value", [0, -1])
def test_bad_flow_count_is_one_config_error_naming_it(value):
  with pytest.raises(ConfigError, match="model.planar.flows"):
    configuration.validate(_config(**{"model.planar.flows": value}), 1)


@pytest.mark.slow
def test_mnist_planar_config_trains_end_to_end(dataset, tmp_path):
  config = mnist_planar.get_config()
  assert config.model.planar.flows == 10
  config.data.batch_size, config.data.eval_batch_size = 32, 40
  config.num_train_steps, config.log_every_steps = 8, 4
  config.eval_every_steps = config.checkpoint_every_steps = 8
  config.num_image_examples = config.num_prior_samples = config.num_traversal_inputs = 2
  config.model.hidden_sizes = (64,)
  results = train.train_and_evaluate(
    config, str(tmp_path), mesh=meshes.make_mesh(jax.devices()[:2]), dataset=dataset
  )
  assert results["step"] == 8 and np.isfinite(results["eval_elbo"])
  assert results == helpers.results(str(tmp_path))
