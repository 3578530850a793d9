"""The unbiased MMD against closed forms and large samples, and the WAE and InfoVAE models."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mnist_infovae, mnist_wae
from tests import test_steps
from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.collectives import LOCAL
from vae_jax.data.pipeline import eval_batches
from vae_jax.errors import ConfigError
from vae_jax.losses import mmd
from vae_jax.models import build_model
from vae_jax.tools import generation, open_run
from vae_jax.tools import reconstruction as recon_tools
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

SCALES = (0.5, 1.0, 2.0)
_replicated_mmd = jax.jit(
  jax.vmap(lambda x, y, kernel: mmd.mmd_u(x, y, kernel, SCALES), in_axes=(0, 0, None)),
  static_argnums=2,
)


def _replicates(rng, reps, n, d, mean=0.0, std=1.0):
  return mean + std * jax.random.normal(rng, (reps, n, d))


def _rbf_expectation(c, tau2, mean_sq, d):
  """E exp(-||u||^2 / c) for u ~ N(m, tau2 I_d) with ||m||^2 = mean_sq."""
  return (1.0 + 2.0 * tau2 / c) ** (-d / 2) * math.exp(-mean_sq / (c + 2.0 * tau2))


def _rbf_mmd2(d, shift, std):
  """Population MMD^2 of N(0, I) and N(shift 1, std^2 I) for the RBF kernel summed over SCALES."""
  total = 0.0
  for scale in SCALES:
    c = 2.0 * d * scale
    kxx = _rbf_expectation(c, 2.0, 0.0, d)
    kyy = _rbf_expectation(c, 2.0 * std**2, 0.0, d)
    kxy = _rbf_expectation(c, 1.0 + std**2, d * shift**2, d)
    total += kxx + kyy - 2.0 * kxy
  return total


def _imq_mmd2_numpy(d, shift, std, pairs=2_000_000):
  """MMD^2 of the same two Gaussians for the IMQ kernel, from independent pairs in float64."""
  rng = np.random.default_rng(0)

  def draw(mean, s):
    return mean + s * rng.standard_normal((pairs, d))

  def mean_k(a, b):
    sq = np.sum((a - b) ** 2, axis=1)
    return sum(np.mean(2 * d * s / (2 * d * s + sq)) for s in SCALES)

  x, x2, y, y2 = draw(0.0, 1.0), draw(0.0, 1.0), draw(shift, std), draw(shift, std)
  return mean_k(x, x2) + mean_k(y, y2) - 2.0 * mean_k(x, y)


@pytest.mark.parametrize("kernel", mmd.KERNELS)
def test_two_samples_of_one_distribution_give_zero_on_average_unlike_the_biased_estimate(kernel):
  reps, n, d = 400, 32, 4
  x = _replicates(jax.random.key(0), reps, n, d, mean=1.0, std=2.0)
  y = _replicates(jax.random.key(1), reps, n, d, mean=1.0, std=2.0)
  values = np.asarray(_replicated_mmd(x, y, kernel))
  se = values.std() / math.sqrt(reps)
  assert abs(values.mean()) < 4 * se
  biased = jax.vmap(
    lambda a, b: sum(
      mmd.kernel_matrix(u, v, kernel, SCALES).mean() * w
      for u, v, w in ((a, a, 1.0), (b, b, 1.0), (a, b, -2.0))
    )
  )(x, y)
  assert float(np.mean(biased)) > 20 * se  # Leaving out i = j is what removes this bias.


@pytest.mark.parametrize("kernel", mmd.KERNELS)
def test_expectation_on_two_known_gaussians_is_the_population_mmd(kernel):
  reps, n, d, shift, std = 400, 64, 3, 0.4, 1.5
  x = _replicates(jax.random.key(2), reps, n, d)
  y = _replicates(jax.random.key(3), reps, n, d, mean=shift, std=std)
  values = np.asarray(_replicated_mmd(x, y, kernel))
  se = values.std() / math.sqrt(reps)
  expected = _rbf_mmd2(d, shift, std) if kernel == "rbf" else _imq_mmd2_numpy(d, shift, std)
  assert expected > 30 * se  # The distributions differ clearly at this sample size.
  assert abs(values.mean() - expected) < 4 * se + 2e-3 * expected


def test_weights_leave_rows_out_and_prior_rows_do_not_depend_on_the_batch_size():
  z = jax.random.normal(jax.random.key(4), (48, 5)) * 1.5 + 0.3
  n = 40
  padded = jnp.concatenate([z[:n], jnp.repeat(z[n - 1 : n], 8, axis=0) + 7.0])
  mask = (jnp.arange(48) < n).astype(jnp.float32)
  rng = jax.random.key(5)
  np.testing.assert_array_equal(mmd.prior_samples(rng, 48, 5)[:n], mmd.prior_samples(rng, n, 5))
  for kernel in mmd.KERNELS:
    real = mmd.prior_mmd(z[:n], rng, kernel, SCALES)
    np.testing.assert_allclose(mmd.prior_mmd(padded, rng, kernel, SCALES, mask), real, rtol=1e-5)
    assert abs(float(mmd.prior_mmd(padded, rng, kernel, SCALES)) - float(real)) > 1e-2


def test_kernels_on_known_distances():
  x = jnp.array([[0.0, 0.0], [3.0, 4.0]])
  c = 2.0 * 2 * 0.5  # d = 2, scale 0.5: C = 2.
  imq = mmd.kernel_matrix(x, x, "imq", (0.5,))
  rbf = mmd.kernel_matrix(x, x, "rbf", (0.5,))
  np.testing.assert_allclose(imq, [[1.0, c / (c + 25.0)], [c / (c + 25.0), 1.0]], rtol=1e-6)
  np.testing.assert_allclose(rbf[0, 1], math.exp(-25.0 / c), rtol=1e-5)
  np.testing.assert_allclose(mmd.kernel_matrix(x, x, "imq", (0.5, 1.0))[0, 1], 2 / 27 + 4 / 29)


def _family(name):
  return {"model.name": name, "data.binarize": "dynamic"}


def _forward(dataset, config, n=32, seed=1):
  model = build_model(config.model, dataset.spec)
  params = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec).params
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(n, 0).batch(0))
  keys = prng.example_keys(jax.random.key(seed), 0, jnp.arange(n))
  terms, outputs = jax.jit(lambda p: steps.forward_terms(model, p, batch, keys, config))(params)
  return model, params, terms, outputs


@pytest.mark.parametrize("name", ["wae", "infovae"])
def test_batch_loss_is_the_weighted_mmd_of_the_codes_and_prior_draws_of_the_key(dataset, name):
  config = tiny_config(**_family(name), **{f"model.{name}.mmd_weight": 3.0})
  model, params, terms, outputs = _forward(dataset, config)
  rng = jax.random.key(2)
  loss, metrics = model.apply({"params": params}, outputs, LOCAL, rng, method=model.batch_loss)
  c = config.model[name]
  expected = mmd.prior_mmd(outputs.z, rng, c.kernel, tuple(c.scales))
  np.testing.assert_allclose(metrics["mmd"], expected, rtol=1e-6)
  np.testing.assert_allclose(loss, 3.0 * expected, rtol=1e-6)
  if name == "wae":  # A point code: no KL.
    np.testing.assert_array_equal(terms["kl"], 0.0)
  else:
    assert float(terms["kl"].mean()) > 0


def test_wae_encodes_to_a_point_and_samples_its_prior(dataset):
  config = tiny_config(**_family("wae"))
  model, params, _, outputs = _forward(dataset, config)
  x = jnp.asarray(dataset.train_stream(32, 0).batch(0)["image"], jnp.float32) / 255.0
  posterior = model.apply({"params": params}, x, method=model.encode)
  assert posterior.logvar is None
  rng = jax.random.key(3)
  samples = model.apply({"params": params}, rng, 5, None, 0.5, method=model.generate)
  z = 0.5 * jax.random.normal(rng, (5, config.model.latent_dim))
  np.testing.assert_allclose(
    samples, model.apply({"params": params}, z, method=model.decode), rtol=1e-6
  )
  assert model.capabilities.prior and not model.capabilities.density


@pytest.mark.parametrize("name", ["wae", "infovae"])
def test_train_step_loss_and_mmd_do_not_depend_on_the_device_count(dataset, name):
  config = tiny_config(**_family(name))
  metrics = device_count_metrics(dataset, config)
  for key in ("mmd", "loss", "recon", "grad_norm"):
    # The MMD (~5e-4 here) is a difference of kernel means of order 1: float32 reduction order
    # moves it by ~1e-7 absolute, so it also gets an absolute tolerance.
    atol = 1e-6 if key == "mmd" else 0.0
    np.testing.assert_allclose(metrics[0][key], metrics[1][key], rtol=1e-5, atol=atol, err_msg=key)
  beta = config.objective.beta
  weight = config.model[name].mmd_weight
  expected = -metrics[1]["recon"] + beta * metrics[1]["kl"] + weight * metrics[1]["mmd"]
  np.testing.assert_allclose(metrics[1]["loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("num_devices", [1, 4])
@pytest.mark.parametrize("name", ["wae", "infovae"])
def test_sharded_gradient_equals_global_batch_gradient(dataset, name, num_devices):
  test_steps.test_sharded_gradient_equals_global_batch_gradient(
    dataset, {"model.name": name}, num_devices
  )


@pytest.mark.parametrize("name", ["wae", "infovae"])
def test_eval_batch_loss_leaves_padding_out_on_four_devices(dataset, name):
  check_eval_batch_loss_leaves_padding_out(dataset, tiny_config(**_family(name)))


@pytest.mark.parametrize(
  "overrides,field",
  [
    ({"model.wae.kernel": "laplace"}, "model.wae.kernel"),
    ({"model.wae.mmd_weight": -1.0}, "model.wae.mmd_weight"),
    ({"model.wae.scales": ()}, "model.wae.scales"),
    ({"model.wae.scales": (1.0, 0.0)}, "model.wae.scales"),
    ({"data.batch_size": 1}, "data.batch_size"),
    ({"objective.estimator": "iwae", "objective.num_samples": 2}, "objective.estimator"),
  ],
)
def test_invalid_wae_config_names_the_field(overrides, field):
  config = tiny_config(**{"model.name": "wae", **overrides})
  with pytest.raises(ConfigError, match=field):
    configuration.validate(config, 1)


def test_invalid_infovae_config_names_the_field():
  config = tiny_config(**{"model.name": "infovae", "model.infovae.kernel": "cosine"})
  with pytest.raises(ConfigError, match="model.infovae.kernel"):
    configuration.validate(config, 1)


def device_count_metrics(dataset, config) -> list[dict]:
  """The metrics of one train step from the same state and batch on 1 and on 4 devices."""
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
  return results


def check_eval_batch_loss_leaves_padding_out(dataset, config, num_real=28) -> None:
  """The eval step's batch loss on a padded batch (4 devices) is that of its real rows alone."""
  model = build_model(config.model, dataset.spec)
  params = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec).params
  batch = next(eval_batches(dataset.test_images[:num_real], None, 32))
  rng = jax.random.key(6)
  mesh = meshes.make_mesh(jax.devices()[:4])
  eval_step = steps.make_eval_step(model, config, mesh)
  sums = jax.device_get(
    eval_step({"params": params}, jax.device_put(batch, meshes.batch_sharded(mesh)), rng)
  )
  assert int(sums["count"]) == num_real
  real = jax.tree.map(lambda v: jnp.asarray(v[:num_real]), batch)
  keys = prng.index_keys(rng, real["index"])
  _, outputs = steps.forward_terms(model, params, real, keys, config)
  expected, _ = model.apply(
    {"params": params}, outputs, LOCAL, prng.batch_key(rng, 0), method=model.batch_loss
  )
  np.testing.assert_allclose(sums["batch_loss"] / num_real, expected, rtol=1e-4)


def shrink(config, **overrides):
  """A shipped config cut down to a few seconds of training, its family fields untouched."""
  config.update_from_flattened_dict(
    {
      "num_train_steps": 8,
      "log_every_steps": 4,
      "eval_every_steps": 8,
      "checkpoint_every_steps": 8,
      "steps_per_execution": 1,
      "num_prior_samples": 4,
      "num_image_examples": 4,
      "num_traversal_inputs": 2,
      "data.eval_batch_size": 40,
      **overrides,
    }
  )
  return config


@pytest.mark.slow
@pytest.mark.parametrize("config_module", [mnist_wae, mnist_infovae])
def test_the_mnist_configs_train_end_to_end_and_the_tools_read_the_run(
  dataset, tmp_path, config_module
):
  config = shrink(
    config_module.get_config(), **{"data.batch_size": 32, "model.hidden_sizes": (32,)}
  )
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(
    config, workdir, mesh=meshes.make_mesh(jax.devices()[:2]), dataset=dataset
  )
  weight = config.model[config.model.name].mmd_weight
  assert results["step"] == 8 and np.isfinite(results["eval_loss"])
  np.testing.assert_allclose(results["eval_batch_loss"], weight * results["eval_mmd"], rtol=1e-5)
  run = open_run(workdir, dataset=dataset)
  for files in (
    generation.run_sample(run, num=4)["files"],
    recon_tools.run_reconstruct(run, num=4)["files"],
    generation.run_interpolate(run, index_a=0, index_b=1, steps=4)["files"],
  ):
    assert all(os.path.exists(f) for f in files) and files
