import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from configs import mnist_hvae
from tests import helpers
from tests.conftest import tiny_config
from vae_jax.data.spec import DataSpec
from vae_jax.losses import distributions
from vae_jax.models import build_model
from vae_jax.models.hvae import HVAE
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

TOP, LOWER = 4, 6  # tiny_config's latent_dim is the top layer.


def _config(**overrides):
  return tiny_config(**{"model.name": "hvae", "model.hvae.lower_dims": (LOWER,), **overrides})


def _init(config=None, n=3):
  config = config or _config()
  model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
  x = jax.random.uniform(jax.random.key(5), (n, 28, 28, 1))
  keys = jax.random.split(jax.random.key(0), n)
  model_vars = model.init(jax.random.key(1), x, keys)
  return model, model_vars, x, keys


def test_output_shapes_and_interface():
  model, model_vars, x, keys = _init()
  out = model.apply(model_vars, x, keys)
  assert out.out.shape == x.shape
  assert out.z.shape == out.stats["mu"].shape == out.stats["logvar"].shape == (3, TOP)
  assert out.kl_per_dim.shape == (3, TOP + LOWER)
  assert out.log_q_z.shape == out.log_p_z.shape == (3,)
  assert set(out.extra_terms) == {"kl_layer_0", "kl_layer_1"}
  post = model.apply(model_vars, x, method=model.encode)
  mu, logvar = post.mean, post.logvar
  np.testing.assert_array_equal(mu, out.stats["mu"])
  np.testing.assert_array_equal(logvar, out.stats["logvar"])
  assert model.apply(model_vars, jnp.zeros((5, TOP)), method=model.decode).shape == (5, 28, 28, 1)
  samples = model.apply(model_vars, jax.random.key(2), 7, method=model.generate)
  assert samples.shape == (7, 28, 28, 1)


def test_densities_are_the_per_layer_gaussians_of_the_sampled_layers():
  model, model_vars, x, keys = _init()
  out = model.apply(model_vars, x, keys)
  eps = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (LOWER + TOP,)))(keys), np.float64)
  mu_top, logvar_top = (np.asarray(a, np.float64) for a in (out.stats["mu"], out.stats["logvar"]))
  z_top = mu_top + np.exp(0.5 * logvar_top) * eps[:, LOWER:]
  np.testing.assert_allclose(out.z, z_top, rtol=1e-5, atol=1e-6)
  mu_p, logvar_p = (
    np.asarray(a, np.float64)
    for a in model.apply(model_vars, 0, jnp.asarray(z_top, jnp.float32), method=model.prior)
  )
  mu_hat, logvar_hat = (np.asarray(a, np.float64) for a in _bottom_up(model, model_vars, x)[0])
  # The ladder merge, written with precisions: q's precision is the sum of the two.
  var_q = 1.0 / (np.exp(-logvar_hat) + np.exp(-logvar_p))
  mu_q = var_q * (mu_hat * np.exp(-logvar_hat) + mu_p * np.exp(-logvar_p))
  z0 = mu_q + np.sqrt(var_q) * eps[:, :LOWER]
  log_q = stats.norm.logpdf(z_top, mu_top, np.exp(0.5 * logvar_top)).sum(-1)
  log_q += stats.norm.logpdf(z0, mu_q, np.sqrt(var_q)).sum(-1)
  log_p = stats.norm.logpdf(z_top).sum(-1) + stats.norm.logpdf(
    z0, mu_p, np.exp(0.5 * logvar_p)
  ).sum(-1)
  np.testing.assert_allclose(out.log_q_z, log_q, rtol=1e-5)
  np.testing.assert_allclose(out.log_p_z, log_p, rtol=1e-5)
  # The decoder sees every sampled layer, bottom first.
  zs = jnp.asarray(np.concatenate([z0, z_top], -1), jnp.float32)
  decoded = model.apply(model_vars, zs, method=lambda m, z: m.decoder(z))
  np.testing.assert_allclose(out.out, decoded, rtol=1e-4, atol=1e-5)


def _bottom_up(model, model_vars, x):
  return model.apply(model_vars, x, method=HVAE._bottom_up)


def test_layer_kls_sum_to_the_total_with_the_top_layer_first():
  model, model_vars, x, keys = _init()
  out = model.apply(model_vars, x, keys)
  kl = out.kl_per_dim
  layers = out.extra_terms
  np.testing.assert_allclose(kl[:, :TOP].sum(-1), layers["kl_layer_1"], rtol=1e-6)
  np.testing.assert_allclose(kl[:, TOP:].sum(-1), layers["kl_layer_0"], rtol=1e-6)
  terms = out.terms(x, "bernoulli")
  np.testing.assert_allclose(terms["kl"], layers["kl_layer_0"] + layers["kl_layer_1"], rtol=1e-6)
  np.testing.assert_allclose(
    layers["kl_layer_1"],
    distributions.kl_standard_normal(out.stats["mu"], out.stats["logvar"]).sum(-1),
    rtol=1e-6,
  )


def test_analytic_kl_agrees_with_the_monte_carlo_kl_in_expectation():
  model, model_vars, x, _ = _init(n=1)
  n = 20_000
  keys = jax.random.split(jax.random.key(7), n)
  out = jax.jit(lambda k: model.apply(model_vars, jnp.repeat(x, n, 0), k))(keys)
  analytic = np.asarray(out.kl_per_dim.sum(-1), np.float64)
  mc = np.asarray(out.log_q_z - out.log_p_z, np.float64)
  diff = mc - analytic
  assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(n)
  assert mc.std() > 2 * analytic.std()  # The reason to use the analytic KL.


def test_decode_sets_lower_layers_to_prior_means_and_generate_at_zero_temperature_matches():
  model, model_vars, _, _ = _init()
  z_top = jax.random.normal(jax.random.key(3), (5, TOP))
  mu_p, _ = model.apply(model_vars, 0, z_top, method=model.prior)
  zs = jnp.concatenate([mu_p, z_top], -1)
  expected = model.apply(model_vars, zs, method=lambda m, z: m.decoder(z))
  np.testing.assert_allclose(
    model.apply(model_vars, z_top, method=model.decode), expected, rtol=1e-6
  )
  cold = model.apply(model_vars, jax.random.key(4), 5, None, 0.0, method=model.generate)
  decode_zero = model.apply(model_vars, jnp.zeros((5, TOP)), method=model.decode)
  np.testing.assert_allclose(cold, decode_zero, rtol=1e-6)
  warm = model.apply(model_vars, jax.random.key(4), 5, None, 1.0, method=model.generate)
  assert not np.allclose(warm, decode_zero)


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
  assert losses[-1] < 0.9 * losses[0]
  np.testing.assert_allclose(
    metrics["kl_layer_0"] + metrics["kl_layer_1"], metrics["kl"], rtol=1e-5
  )


def test_iwae_weights_match_the_importance_log_weights(dataset):
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
  assert np.all(np.asarray(terms["iwae"]) >= np.asarray(weights.mean(0)) - 1e-4)


@pytest.mark.slow
def test_mnist_hvae_config_trains_end_to_end_with_iwae(dataset, tmp_path):
  config = mnist_hvae.get_config()
  config.data.batch_size, config.data.eval_batch_size = 32, 40
  config.num_train_steps, config.log_every_steps = 8, 4
  config.eval_every_steps = config.checkpoint_every_steps = 8
  config.num_image_examples = config.num_prior_samples = config.num_traversal_inputs = 2
  config.model.hidden_sizes, config.model.hvae.hidden = (64,), 32
  # The IWAE bound has no KL weight to warm up.
  config.objective.estimator, config.objective.num_samples = "iwae", 2
  config.objective.kl_schedule = "constant"
  results = train.train_and_evaluate(
    config, str(tmp_path), mesh=meshes.make_mesh(jax.devices()[:1]), dataset=dataset
  )
  assert np.isfinite(results["eval_iwae"]) and results["eval_iwae"] >= results["eval_elbo"] - 1
  assert {"eval_kl_layer_0", "eval_kl_layer_1", "eval_kl_dim_83"} <= set(results)
  series = helpers.scalar_series(str(tmp_path), "train/kl_layer_1")
  assert len(series) == 2
