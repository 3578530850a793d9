import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mnist_iaf
from tests.conftest import tiny_config
from vae_jax.data.spec import DataSpec
from vae_jax.losses import distributions
from vae_jax.models import build_model
from vae_jax.models.made import MADE, IAFFlow, made_masks
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

DIM, CONTEXT = 6, 3


def _randomize(params, seed=0):
  """Every parameter (the zero-initialised output kernels too) drawn from N(0, 0.5^2)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
    [0.5 * jax.random.normal(k, v.shape) for k, v in zip(keys, leaves, strict=True)]
  )


def test_made_masks_follow_the_degrees():
  masks = made_masks(3, (4,))
  # Hidden degrees cycle through 1..d-1 = 1, 2, 1, 2; input j -> hidden k iff deg(k) >= j.
  np.testing.assert_array_equal(masks[0], [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]])
  # Hidden k -> output i iff i > deg(k): output 1 sees nothing, output 3 sees every unit.
  np.testing.assert_array_equal(masks[1], [[0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 0, 1]])


@pytest.mark.parametrize("hidden_sizes", [(16, 16), (5,), ()])
def test_made_jacobian_is_strictly_lower_triangular(hidden_sizes):
  made = MADE(hidden_sizes)
  z = jax.random.normal(jax.random.key(0), (1, DIM))
  h = jax.random.normal(jax.random.key(1), (1, CONTEXT))
  params = _randomize(made.init(jax.random.key(2), z, h))

  def outputs(z_row):
    m, s = made.apply(params, z_row[None], h)
    return jnp.stack([m[0], s[0]])

  jac = np.asarray(jax.jacfwd(outputs)(z[0]))  # [2, out i, in j]
  lower = np.tril(np.ones((DIM, DIM), bool), -1)
  for j in jac:
    np.testing.assert_array_equal(j[~lower], 0.0)
    assert np.all(np.abs(j[lower]) > 1e-6)  # Every earlier input reaches every later output.


def test_made_context_reaches_every_output_but_the_first():
  made = MADE((16,))
  z = jnp.ones((1, DIM))
  h = jax.random.normal(jax.random.key(1), (1, CONTEXT))
  params = _randomize(made.init(jax.random.key(2), z, h))
  jac = np.asarray(jax.jacfwd(lambda c: made.apply(params, z, c[None])[0][0])(h[0]))
  np.testing.assert_array_equal(jac[0], 0.0)
  assert np.all(np.abs(jac[1:]).sum(-1) > 1e-6)


@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_flow_log_det_equals_the_numeric_log_det(num_steps):
  flow = IAFFlow(num_steps, (16,))
  z = jax.random.normal(jax.random.key(0), (1, DIM))
  h = jax.random.normal(jax.random.key(1), (1, CONTEXT))
  params = _randomize(flow.init(jax.random.key(2), z, h))
  _, log_det = flow.apply(params, z, h)
  jac = jax.jacfwd(lambda v: flow.apply(params, v[None], h)[0][0])(z[0])
  sign, numeric = np.linalg.slogdet(np.asarray(jac, np.float64))
  assert sign != 0
  np.testing.assert_allclose(log_det[0], numeric, rtol=1e-4)  # float32 Jacobian.
  assert abs(numeric) > 0.1  # Not a volume-preserving map: the check has teeth.


def _iaf_config(**overrides):
  return tiny_config(
    **{
      "model.name": "iaf",
      "model.iaf.hidden_sizes": (16,),
      "model.iaf.context_dim": 3,
      **overrides,
    }
  )


def _init(config, n=3):
  model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
  x = jax.random.uniform(jax.random.key(5), (n, 28, 28, 1))
  keys = jax.random.split(jax.random.key(0), n)
  return model, model.init(jax.random.key(1), x, keys), x, keys


@pytest.mark.parametrize("num_steps", [2, 3])
def test_identity_flow_gives_the_diagonal_gaussian_posterior(num_steps):
  model, model_vars, x, keys = _init(_iaf_config(**{"model.iaf.steps": num_steps}))
  # Zero output kernels (the init) and sigma = sigmoid(30) = 1 in float32: every step is z -> z.
  params = jax.tree_util.tree_map_with_path(
    lambda path, v: jnp.full_like(v, 30.0) if _is_s_bias(path) else v, model_vars["params"]
  )
  out = model.apply({"params": params}, x, keys)
  eps = jax.vmap(lambda k: jax.random.normal(k, (4,)))(keys)
  z0 = out.stats["mu"] + jnp.exp(0.5 * out.stats["logvar"]) * eps
  np.testing.assert_allclose(out.z, z0, rtol=1e-6)  # Order restored after the reversals.
  np.testing.assert_allclose(
    out.log_q_z,
    distributions.gaussian_log_density(z0, out.stats["mu"], out.stats["logvar"]),
    rtol=1e-6,
  )
  np.testing.assert_allclose(out.log_p_z, distributions.standard_normal_log_density(z0), rtol=1e-6)
  post = model.apply({"params": params}, x, method=model.encode)
  code, logvar = post.mean, post.logvar
  np.testing.assert_allclose(code, out.stats["mu"], rtol=1e-6)
  np.testing.assert_array_equal(logvar, out.stats["logvar"])
  # The fresh flow (sigma = sigmoid(2)) is not the identity, and log q includes its log-det.
  fresh = model.apply(model_vars, x, keys)
  log_det = num_steps * 4 * np.log(jax.nn.sigmoid(2.0))
  base = distributions.gaussian_log_density(
    fresh.stats["z0"], fresh.stats["mu"], fresh.stats["logvar"]
  )
  np.testing.assert_allclose(fresh.log_q_z, base - log_det, rtol=1e-5)


def _is_s_bias(path) -> bool:
  names = [getattr(p, "key", None) for p in path]
  return names[-2:] == ["s", "bias"]


def test_outputs_shapes_and_prior_samples():
  model, model_vars, x, keys = _init(_iaf_config())
  out = model.apply(model_vars, x, keys)
  assert out.out.shape == x.shape and out.kl_per_dim is None
  assert out.z.shape == out.stats["z0"].shape == (3, 4)
  assert out.log_q_z.shape == out.log_p_z.shape == (3,)
  samples = model.apply(model_vars, jax.random.key(3), 5, method=model.generate)
  assert samples.shape == (5, 28, 28, 1)


def test_a_few_steps_lower_the_loss(dataset):
  config = _iaf_config()
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
  made_kernel = state.params["flow"]["made_0"]["m"]["kernel"]
  assert np.abs(np.asarray(made_kernel)).max() > 0  # The flow itself is trained.


@pytest.mark.slow
def test_mnist_iaf_config_trains_end_to_end(dataset, tmp_path):
  config = mnist_iaf.get_config()
  config.data.batch_size, config.data.eval_batch_size = 32, 40
  config.num_train_steps, config.log_every_steps = 8, 4
  config.eval_every_steps = config.checkpoint_every_steps = 8
  config.num_image_examples = config.num_prior_samples = config.num_traversal_inputs = 2
  results = train.train_and_evaluate(
    config, str(tmp_path), mesh=meshes.make_mesh(jax.devices()[:1]), dataset=dataset
  )
  assert results["step"] == 8 and np.isfinite(results["eval_elbo"])
  assert results["eval_kl"] > 0
