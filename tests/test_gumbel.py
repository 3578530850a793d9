import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image
from scipy import stats

from configs import mnist_gumbel
from tests import helpers
from tests.conftest import synthetic_dataset, tiny_config
from vae_jax import configuration
from vae_jax.data.spec import DataSpec
from vae_jax.errors import ConfigError
from vae_jax.evaluation import summaries
from vae_jax.evaluation.inference import Inference
from vae_jax.losses import categorical, elbo
from vae_jax.models import build_model, codes
from vae_jax.tools import ToolError, common, generation, open_run
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

N, K = 3, 4
CELL = 29  # A 28-pixel image plus the grid's 1-pixel padding.


def _config(**overrides):
  return tiny_config(
    **{"model.name": "gumbel", "model.latent_dim": N, "model.gumbel.num_classes": K, **overrides}
  )


def _init(config=None, n=5):
  config = config or _config()
  model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
  x = jax.random.uniform(jax.random.key(5), (n, 28, 28, 1))
  keys = jax.random.split(jax.random.key(0), n)
  return model, model.init(jax.random.key(1), x, keys), x, keys


def _numpy_kl(logits):
  logits = np.asarray(logits, np.float64)
  q = np.exp(logits - logits.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  return np.sum(q * np.log(q * logits.shape[-1]), -1)


def _noise(keys):
  return np.asarray(jax.vmap(lambda k: jax.random.gumbel(k, (N, K)))(keys), np.float64)


# The terms on known inputs.


def test_kl_to_the_uniform_categorical_on_known_logits():
  logits = np.log(np.array([[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
  expected = [0.0, sum(p * math.log(4 * p) for p in (0.1, 0.2, 0.3, 0.4)), 0.7 * math.log(2.8)]
  expected[2] += 3 * 0.1 * math.log(0.4)
  np.testing.assert_allclose(categorical.kl_uniform(jnp.asarray(logits)), expected, atol=1e-6)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5, 7)) * 3
  np.testing.assert_allclose(categorical.kl_uniform(logits), _numpy_kl(logits), rtol=1e-5)
  one_hot = categorical.kl_uniform(jnp.array([[60.0, 0.0, 0.0]]))
  np.testing.assert_allclose(one_hot, [math.log(3)], rtol=1e-6)  # The largest KL: log K.


def test_relaxed_sample_is_on_the_simplex_and_becomes_one_hot_as_tau_goes_to_zero():
  logits = jax.random.normal(jax.random.key(0), (200, N, K)) * 2
  perturbed = logits + categorical.gumbel_noise(jax.random.split(jax.random.key(1), 200), (N, K))
  hard = jax.nn.one_hot(jnp.argmax(perturbed, -1), K)
  gaps = []
  for tau in (2.0, 1.0, 0.5, 0.1, 0.01, 0.001):
    y = np.asarray(categorical.relaxed_one_hot(perturbed, tau), np.float64)
    assert (y >= 0).all()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(y.argmax(-1), np.asarray(hard).argmax(-1))
    gaps.append(np.abs(y - hard).max(-1).mean())
  assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
  assert gaps[-1] < 1e-3 and gaps[0] > 0.3


def test_argmax_of_logits_plus_gumbel_noise_is_distributed_as_softmax():
  logits = jnp.log(jnp.array([0.05, 0.15, 0.3, 0.5]))
  n = 40_000
  noise = categorical.gumbel_noise(jax.random.split(jax.random.key(3), n), (4,))
  counts = np.bincount(np.asarray(jnp.argmax(logits + noise, -1)), minlength=4)
  assert stats.chisquare(counts, n * np.array([0.05, 0.15, 0.3, 0.5])).pvalue > 1e-3
  skewed = n * np.array([0.06, 0.14, 0.3, 0.5])  # A 1-point error in one class is detected.
  assert stats.chisquare(counts, skewed).pvalue < 1e-6


def test_annealing_schedule_values():
  def tau(step, rate=1e-4, every=500):
    return float(categorical.annealed_temperature(step, 1.0, 0.5, rate, every))

  assert tau(0) == tau(499) == 1.0
  assert tau(500) == pytest.approx(math.exp(-0.05), rel=1e-6) == tau(999)
  assert tau(1000) == pytest.approx(math.exp(-0.1), rel=1e-6)
  assert tau(6500) == pytest.approx(math.exp(-0.65), rel=1e-6)
  assert tau(7000) == 0.5 == tau(10**6)  # exp(-0.7) < 0.5: the floor.
  assert tau(123, rate=1e-3, every=1) == pytest.approx(math.exp(-0.123), rel=1e-6)
  assert float(categorical.annealed_temperature(10**6, 2.0, 0.5, 0.0)) == 2.0
  model = build_model(
    _config(**{"model.gumbel.temperature": 2.0}).model, DataSpec((28, 28, 1), 10, 60_000)
  )
  assert float(model.temperature_at(1000)) == pytest.approx(2 * math.exp(-0.1), rel=1e-6)


def test_training_samples_are_relaxed_at_the_step_s_temperature_from_each_example_key():
  config = _config(**{"model.gumbel.anneal_rate": 1e-3, "model.gumbel.anneal_every": 1})
  model, model_vars, x, keys = _init(config)
  logits = np.asarray(model.apply(model_vars, x, method=model.logits), np.float64)
  perturbed = logits + _noise(keys)
  for step in (0, 400):
    tau = math.exp(-1e-3 * step)
    out = model.apply(model_vars, x, keys, step=jnp.int32(step))
    y = np.exp((perturbed - perturbed.max(-1, keepdims=True)) / tau)
    y /= y.sum(-1, keepdims=True)
    np.testing.assert_allclose(out.z, y.reshape(len(x), -1), atol=2e-6)
    np.testing.assert_allclose(out.extra_terms["temperature"], tau, rtol=1e-6)
    decoded = model.apply(model_vars, out.z, method=model.decode)
    np.testing.assert_allclose(out.out, decoded, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.kl_per_dim, _numpy_kl(logits), rtol=1e-5, atol=1e-6)
  terms = out.terms(x, "bernoulli")
  np.testing.assert_allclose(terms["kl"], _numpy_kl(logits).sum(-1), rtol=1e-5)


def test_without_a_step_the_sample_is_exact_one_hot_with_its_discrete_densities():
  model, model_vars, x, keys = _init()
  out = model.apply(model_vars, x, keys)
  logits = np.asarray(out.stats["logits"], np.float64)
  classes = (logits + _noise(keys)).argmax(-1)
  np.testing.assert_array_equal(out.z, np.eye(K)[classes].reshape(len(x), -1))
  assert "temperature" not in out.extra_terms
  log_q = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = np.take_along_axis(log_q, classes[..., None], -1).sum((1, 2))
  np.testing.assert_allclose(out.log_q_z, expected, rtol=1e-5)
  np.testing.assert_allclose(out.log_p_z, -N * math.log(K), rtol=1e-6)
  # log q - log p of the exact samples is an unbiased estimate of the analytic KL.
  n = 20_000
  many = jax.jit(lambda k: model.apply(model_vars, jnp.repeat(x[:1], n, 0), k))(
    jax.random.split(jax.random.key(7), n)
  )
  diff = np.asarray(many.log_q_z - many.log_p_z, np.float64) - float(many.kl_per_dim[0].sum())
  assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(n)
  post = model.apply(model_vars, x, method=model.encode)
  np.testing.assert_allclose(post.mean.reshape(-1, N, K), np.exp(log_q), rtol=1e-5)
  assert post.logvar is None


def test_straight_through_decodes_one_hot_with_the_relaxed_gradient():
  soft_model, model_vars, x, keys = _init()
  st_model = build_model(
    _config(**{"model.gumbel.straight_through": True}).model, DataSpec((28, 28, 1), 10, 60_000)
  )
  out = st_model.apply(model_vars, x, keys, step=jnp.int32(0))
  classes = (np.asarray(out.stats["logits"]) + _noise(keys)).argmax(-1)
  np.testing.assert_array_equal(out.z, np.eye(K)[classes].reshape(len(x), -1))
  w = jax.random.normal(jax.random.key(9), out.z.shape)

  def grad_of_code(model):
    def f(params):
      return jnp.sum(w * model.apply({"params": params}, x, keys, step=jnp.int32(0)).z)

    return jax.grad(f)(model_vars["params"])

  straight, relaxed = grad_of_code(st_model), grad_of_code(soft_model)
  helpers.assert_trees_close(straight, relaxed, atol=1e-6)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(relaxed)) > 1e-3


def test_prior_samples_decode_uniform_one_hot_codes():
  model, model_vars, _, _ = _init()
  classes = jax.random.randint(jax.random.key(4), (6, N), 0, K)
  expected = model.apply(model_vars, jax.nn.one_hot(classes, K).reshape(6, -1), method=model.decode)
  samples = model.apply(model_vars, jax.random.key(4), 6, None, 0.3, method=model.generate)
  np.testing.assert_allclose(samples, expected, rtol=1e-6)


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"model.gumbel.num_classes": 1}, "model.gumbel.num_classes=1 must be >= 2"),
    ({"model.gumbel.temperature": 0.0}, "model.gumbel.temperature=0.0 must be > 0"),
    ({"model.gumbel.min_temperature": 2.0}, "model.gumbel.min_temperature=2.0 must be in"),
    ({"model.gumbel.anneal_rate": -1.0}, "model.gumbel.anneal_rate=-1.0 must be >= 0"),
    ({"model.gumbel.anneal_every": 0}, "model.gumbel.anneal_every=0 must be >= 1"),
    ({"objective.estimator": "iwae", "objective.num_samples": 2}, "objective.estimator='iwae'"),
  ],
)
def test_bad_fields_give_one_config_error_naming_the_field(overrides, message):
  with pytest.raises(ConfigError, match=message.replace("(", "\\(")):
    configuration.validate(_config(**overrides), 1)


# The train step passes the step; 1 and 4 devices agree with jax.grad of the global loss.


@pytest.mark.parametrize("num_devices", [1, 4])
def test_train_step_gradient_at_a_later_step_equals_the_global_batch_gradient(dataset, num_devices):
  config = _config(**{"model.gumbel.anneal_rate": 1e-3, "model.gumbel.anneal_every": 1})
  model = build_model(config.model, dataset.spec)
  tx = optax.sgd(1.0)
  rng, step = jax.random.key(0), 300
  state = state_lib.init_state(model, tx, rng, dataset.spec).replace(step=jnp.int32(step))
  batch = dataset.train_stream(32, 0).batch(0)
  keys = prng.example_keys(rng, step, jnp.arange(32))

  def global_loss(params, at):
    device_batch = jax.tree.map(jnp.asarray, batch)
    terms, _ = steps.forward_terms(model, params, device_batch, keys, config, step=at)
    return elbo.loss_from_terms(terms, config.objective, at)[0]

  expected = jax.grad(global_loss)(state.params, jnp.int32(step))
  at_zero = jax.grad(global_loss)(state.params, jnp.int32(0))
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  before = jax.device_get(state.params)
  train_step = steps.make_train_step(model, tx, config, mesh)
  state = jax.device_put(state, meshes.replicated(mesh))
  after, metrics = train_step(state, jax.device_put(batch, meshes.batch_sharded(mesh)), rng)
  got = jax.tree.map(lambda a, b: a - b, before, jax.device_get(after.params))
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(g, e, atol=1e-5 * float(np.abs(e).max()) + 1e-7)
  # The step matters: at step 0 (tau = 1) the gradient is another.
  gaps = jax.tree.map(lambda g, z: float(np.abs(g - z).max()), got, at_zero)
  assert max(jax.tree.leaves(gaps)) > 1e-3
  np.testing.assert_allclose(metrics["temperature"], math.exp(-0.3), rtol=1e-6)


# The config end to end, and the latent tools on the trained run.


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  data = synthetic_dataset()
  workdir = str(tmp_path_factory.mktemp("gumbel") / "run")
  config = mnist_gumbel.get_config()
  config.update_from_flattened_dict(
    {
      "model.latent_dim": N,
      "model.gumbel.num_classes": K,
      "model.gumbel.anneal_every": 1,
      "model.gumbel.anneal_rate": 1e-2,
      "model.hidden_sizes": (64, 32),
      "data.batch_size": 32,
      "data.eval_batch_size": 40,
      "optimizer.learning_rate": 3e-3,
      "num_train_steps": 64,
      "log_every_steps": 32,
      "eval_every_steps": 64,
      "checkpoint_every_steps": 64,
      "num_image_examples": 2,
      "num_prior_samples": 4,
      "num_traversal_inputs": 2,
    }
  )
  train.train_and_evaluate(config, workdir, mesh=meshes.make_mesh(jax.devices()[:1]), dataset=data)
  return open_run(workdir, dataset=data)


def _png_shape(path):
  return np.asarray(Image.open(path)).shape


def _grid(rows, cols):
  return rows * CELL + 1, cols * CELL + 1


def test_the_config_trains_and_logs_per_variable_kl_temperature_and_categorical_traversals(run):
  results = helpers.results(run.workdir)
  assert results["step"] == 64 and np.isfinite(results["eval_elbo"])
  kl = [results[f"eval_kl_dim_{j:02d}"] for j in range(N)]
  assert f"eval_kl_dim_{N:02d}" not in results
  assert all(0 <= v <= math.log(K) + 1e-6 for v in kl)
  np.testing.assert_allclose(sum(kl), results["eval_kl"], rtol=1e-5)
  temperature = helpers.scalar_series(run.workdir, "train/temperature")
  # Mean of tau_t over steps 0-31 and 32-63 of max(0.5, exp(-0.01 t)).
  taus = np.maximum(0.5, np.exp(-0.01 * np.arange(64)))
  np.testing.assert_allclose([v for _, v in temperature], taus.reshape(2, 32).mean(1), rtol=1e-5)
  tags = helpers.event_tags(run.workdir)
  assert {"traversals", "prior_samples", "reconstructions"} <= tags


def test_traversal_summary_cycles_each_variable_through_its_classes(run):
  inference = Inference(run.model, run.model_vars, run.config, meshes.make_mesh(jax.devices()[:1]))
  grids = summaries.traversal_grids(inference, run.dataset.test_images[:2], None, None)
  assert grids.shape == (2, *_grid(N, K), 1)


def test_sample_traverse_and_interpolate_tools_on_categorical_codes(run):
  result = generation.run_sample(run, num=8)
  assert _png_shape(result["files"][0]) == _grid(3, 3)
  mu = common.inference(run).posterior_means(run.dataset.test_images[3:4])[0]
  result = generation.run_traverse(run, index=3, steps=7, range=2.0)  # K columns, not 7.
  assert _png_shape(result["files"][0]) == _grid(N, K)
  assert sorted(result["dims"]) == list(range(N)) and result["kl_per_dim"].shape == (N,)
  assert result["kl_per_dim"][result["dims"][0]] >= result["kl_per_dim"][result["dims"][-1]]
  j = result["dims"][0]
  code = mu.reshape(N, K).copy()
  code[j] = np.eye(K)[2]
  expected = common.inference(run).decode(code.reshape(1, -1))
  np.testing.assert_allclose(result["images"][2], expected[0], atol=1e-5)
  result = generation.run_interpolate(run, index_a=2, index_b=5, steps=6)
  assert _png_shape(result["files"][0]) == _grid(2, 8)
  assert set(result["images"]) == {"linear", "logit"}
  ends = common.inference(run).posterior_means(run.dataset.test_images[[2, 5]])
  expected = common.inference(run).decode(ends)
  for mode in ("linear", "logit"):
    np.testing.assert_allclose(result["images"][mode][[0, -1]], expected, atol=1e-5)
  assert not np.allclose(result["images"]["linear"][2], result["images"]["logit"][2], atol=1e-4)
  with pytest.raises(ToolError, match="--mode='slerp' is not one of \\('linear', 'logit', 'both'"):
    generation.run_interpolate(run, mode="slerp")
  assert {"sample", "traverse", "interpolate"} <= helpers.event_tags(
    os.path.join(run.workdir, "tools")
  )


# The code space on known codes.


def test_categorical_code_space_on_a_known_code():
  space = codes.CategoricalCodes(2, 3)
  code = np.array([[0.2, 0.3, 0.5, 0.6, 0.3, 0.1]], np.float32)
  z = space.traversal(code, np.array([1]), np.linspace(-3, 3, 10))
  assert z.shape == (1, 1, 3, 6) and space.num_latents(6) == 2
  for c in range(3):
    np.testing.assert_allclose(z[0, 0, c], [0.2, 0.3, 0.5, *np.eye(3)[c]])
  a, b = code[0], np.array([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
  t = np.linspace(0, 1, 5)
  linear = space.path(a, b, t, "linear")
  np.testing.assert_allclose(linear[2], (a + b) / 2)
  logit = space.path(a, np.array([0.5, 0.25, 0.25, 0.2, 0.2, 0.6]), t, "logit")
  np.testing.assert_allclose(logit.reshape(5, 2, 3).sum(-1), 1.0, rtol=1e-12)
  mid = np.sqrt(a * np.array([0.5, 0.25, 0.25, 0.2, 0.2, 0.6])).reshape(2, 3)
  np.testing.assert_allclose(logit[2], (mid / mid.sum(-1, keepdims=True)).reshape(-1), rtol=1e-6)
  np.testing.assert_allclose(logit[0], a, rtol=1e-6)
  np.testing.assert_allclose(space.path(a, b, t, "logit")[-1], b, atol=1e-30)
  np.testing.assert_allclose(
    space.latent_kl(code, None)[0], _numpy_kl(np.log(code.reshape(2, 3))), rtol=1e-5
  )


def test_real_code_space_sets_one_coordinate_per_row():
  space = codes.RealCodes()
  code = np.arange(6, dtype=np.float32).reshape(2, 3)
  values = np.array([-1.0, 1.0], np.float32)
  z = space.traversal(code, np.array([2, 0]), values)
  assert z.shape == (2, 2, 2, 3)
  np.testing.assert_array_equal(z[1, 0, 1], [3, 4, 1])
  np.testing.assert_array_equal(z[0, 1, 0], [-1, 1, 2])
  assert space.latent_kl(code, None) is None and space.num_latents(3) == 3
