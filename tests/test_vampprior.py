import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from configs import mnist_vampprior
from tests import helpers
from tests.conftest import tiny_config
from vae_jax import configuration, runs
from vae_jax.data.spec import DataSpec
from vae_jax.errors import ConfigError
from vae_jax.evaluation import suite as eval_suite
from vae_jax.losses import distributions
from vae_jax.models import build_model
from vae_jax.models.vampprior import mixture_log_density
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

D = 4  # tiny_config's latent_dim.


def _config(k=3, **overrides):
  return tiny_config(
    **{"model.name": "vampprior", "model.vampprior.num_pseudo_inputs": k, **overrides}
  )


def _init(config=None, n=3):
  config = config or _config()
  model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
  x = jax.random.uniform(jax.random.key(5), (n, 28, 28, 1))
  keys = jax.random.split(jax.random.key(0), n)
  return model, model.init(jax.random.key(1), x, keys), x, keys


def _with(model_vars, **params):
  return {"params": {**model_vars["params"], **params}}


def test_mixture_log_density_matches_a_direct_computation():
  z = np.array([[0.0, 0.0], [1.0, -2.0], [3.0, 0.5]])
  means = np.array([[0.0, 0.0], [1.0, -1.0], [-2.0, 2.0], [3.0, 0.0]])
  logvars = np.log(np.array([[1.0, 1.0], [0.25, 4.0], [2.0, 0.5], [0.1, 1.0]]))
  pdf = stats.norm.pdf(z[:, None], means[None], np.exp(0.5 * logvars)[None]).prod(-1)  # [3, 4]
  expected = np.log(pdf.mean(-1))
  got = mixture_log_density(*(jnp.asarray(a, jnp.float32) for a in (z, means, logvars)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # One component: the Gaussian itself.
  one = mixture_log_density(jnp.asarray(z), jnp.asarray(means[1:2]), jnp.asarray(logvars[1:2]))
  np.testing.assert_allclose(
    one, stats.norm.logpdf(z, means[1], np.exp(0.5 * logvars[1])).sum(-1), rtol=1e-5
  )


def test_one_pseudo_input_with_a_standard_normal_posterior_gives_the_standard_prior():
  model, model_vars, x, keys = _init(_config(k=1))
  # tiny_config's Flax init has zero biases, so a zero pseudo-input (negative pixels clip to 0)
  # has zero features and the zero head bias maps it to N(0, I); data keep their own posteriors.
  params = _with(model_vars, pseudo_inputs=-jnp.ones((1, 28, 28, 1)))
  means, logvars = model.apply(params, method=model.prior_components)
  np.testing.assert_array_equal(means, 0.0)
  np.testing.assert_array_equal(logvars, 0.0)
  out = model.apply(params, x, keys)
  np.testing.assert_allclose(
    out.log_p_z, distributions.standard_normal_log_density(out.z), rtol=1e-6
  )
  posterior = model.apply(params, x, method=model.encode)
  assert np.abs(np.asarray(posterior.mean)).max() > 1e-3  # The data's posterior is not N(0, I).


def test_the_prior_is_the_mixture_of_the_pseudo_inputs_posteriors():
  model, model_vars, x, keys = _init(_config(k=3))
  out = model.apply(model_vars, x, keys)
  u = np.clip(np.asarray(model_vars["params"]["pseudo_inputs"]), 0, 1)
  component = model.apply(model_vars, jnp.asarray(u), method=model.encode)
  mu_k, sd_k = (np.asarray(v, np.float64) for v in (component.mean, np.exp(0.5 * component.logvar)))
  z = np.asarray(out.z, np.float64)
  pdf = stats.norm.pdf(z[:, None], mu_k[None], sd_k[None]).prod(-1)
  np.testing.assert_allclose(out.log_p_z, np.log(pdf.mean(-1)), rtol=1e-5)
  mu, logvar = out.stats["mu"], out.stats["logvar"]
  eps = distributions.standard_normal_noise(keys, D)
  np.testing.assert_allclose(out.z, mu + jnp.exp(0.5 * logvar) * eps, rtol=1e-6)
  np.testing.assert_allclose(out.log_q_z, distributions.gaussian_log_density(out.z, mu, logvar))
  assert out.kl_per_dim is None and out.out.shape == x.shape
  np.testing.assert_allclose(out.terms(x, "bernoulli")["kl"], out.log_q_z - out.log_p_z)


def test_gradients_reach_the_pseudo_inputs():
  model, model_vars, x, keys = _init(_config(k=3))
  # Float64, so central differences resolve the gradient without crossing the ReLUs' kinks.
  with jax.enable_x64(True):
    model_vars, x = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), (model_vars, x))
    u0 = model_vars["params"]["pseudo_inputs"].at[0, 0, 0, 0].set(-0.5)  # Below the clip.

    def mean_log_p(u):
      return model.apply(_with(model_vars, pseudo_inputs=u), x, keys).log_p_z.mean()

    grad = np.asarray(jax.grad(mean_log_p)(u0))
    assert grad[0, 0, 0, 0] == 0.0  # Hardtanh: a clipped pixel gets no gradient.
    assert np.count_nonzero(grad) > 0.9 * grad.size
    direction = jax.random.normal(jax.random.key(9), u0.shape, jnp.float64).at[0, 0, 0, 0].set(0)
    step = 1e-5
    numeric = (mean_log_p(u0 + step * direction) - mean_log_p(u0 - step * direction)) / (2 * step)
  analytic = np.sum(grad * np.asarray(direction))
  assert abs(analytic) > 1e-2
  np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_generate_at_zero_temperature_decodes_the_components_means():
  model, model_vars, _, _ = _init(_config(k=3))
  means, _ = model.apply(model_vars, method=model.prior_components)
  decoded = np.asarray(model.apply(model_vars, means, method=model.decode))
  cold = np.asarray(
    model.apply(model_vars, jax.random.key(4), 20, None, 0.0, method=model.generate)
  )
  which = [int(np.argmin(np.abs(decoded - c[None]).reshape(3, -1).max(-1))) for c in cold]
  for c, k in zip(cold, which, strict=True):
    np.testing.assert_allclose(c, decoded[k], rtol=1e-5, atol=1e-6)
  assert set(which) == {0, 1, 2}  # Every pseudo-input is picked.
  warm = model.apply(model_vars, jax.random.key(4), 20, None, 1.0, method=model.generate)
  assert warm.shape == (20, 28, 28, 1) and not np.allclose(warm, cold)


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
  assert np.all(np.asarray(terms["iwae"]) >= np.asarray(weights.mean(0)) - 1e-4)


def _run_steps(dataset, config, num_devices, n):
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  model = build_model(config.model, dataset.spec)
  tx = optax.sgd(1e-2)  # SGD: Adam would hide a wrong gradient scale.
  rng = jax.random.key(0)
  state = state_lib.init_state(model, tx, rng, dataset.spec)
  step = steps.make_train_step(model, tx, config, mesh)
  batch = jax.device_put(dataset.train_stream(32, 0).batch(0), meshes.batch_sharded(mesh))
  history = []
  for _ in range(n):
    state, metrics = step(state, batch, rng)
    history.append(metrics)
  return state, history


def test_one_and_four_devices_give_the_same_params_and_pseudo_inputs(dataset):
  config = _config(k=5)
  s1, h1 = _run_steps(dataset, config, 1, 3)
  s4, h4 = _run_steps(dataset, config, 4, 3)
  helpers.assert_trees_close(s1.params, s4.params, atol=1e-6)
  for m1, m4 in zip(h1, h4, strict=True):
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  start = state_lib.init_state(
    build_model(config.model, dataset.spec), optax.sgd(1e-2), jax.random.key(0), dataset.spec
  )
  moved = np.abs(np.asarray(s1.params["pseudo_inputs"] - start.params["pseudo_inputs"]))
  assert moved.max() > 1e-6  # The pseudo-inputs are trained.


@pytest.mark.parametrize(
  "field,value",
  [("num_pseudo_inputs", 0), ("pseudo_init_mean", 1.5), ("pseudo_init_std", -0.1)],
)
def test_bad_fields_are_one_config_error_naming_them(field, value):
  with pytest.raises(ConfigError, match=f"model.vampprior.{field}"):
    configuration.validate(_config(**{f"model.vampprior.{field}": value}), 1)


@pytest.mark.slow
def test_mnist_vampprior_config_trains_and_evaluates_end_to_end(dataset, tmp_path):
  config = mnist_vampprior.get_config()
  assert config.model.vampprior.num_pseudo_inputs == 500
  config.data.batch_size, config.data.eval_batch_size = 32, 40
  config.num_train_steps, config.log_every_steps = 8, 4
  config.eval_every_steps = config.checkpoint_every_steps = 8
  config.num_image_examples = config.num_prior_samples = config.num_traversal_inputs = 2
  config.model.hidden_sizes = (64,)
  mesh = meshes.make_mesh(jax.devices()[:2])
  results = train.train_and_evaluate(config, str(tmp_path), mesh=mesh, dataset=dataset)
  assert results["step"] == 8 and np.isfinite(results["eval_elbo"]) and results["eval_kl"] > 0
  assert "prior_samples" in helpers.event_tags(str(tmp_path))
  run = runs.open_run(str(tmp_path), "latest", mesh=mesh, dataset=dataset)
  options = eval_suite.EvalOptions(iw_samples=8, iw_chunk=4, iw_batch_size=20, num_examples=40)
  iw = eval_suite.evaluate_run(run, ["iw_nll"], options, mesh=mesh)["iw_nll"]
  assert np.isfinite(iw["iw_nll"]) and iw["iw_nll"] < iw["nll_elbo"]
