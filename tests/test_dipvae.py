"""DIP-VAE: the covariance penalty on known batches, over the global batch, and its config."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dsprites_dipvae
from tests import test_steps
from tests.conftest import tiny_config
from tests.test_mmd import check_eval_batch_loss_leaves_padding_out, device_count_metrics, shrink
from vae_jax import configuration
from vae_jax.collectives import LOCAL
from vae_jax.errors import ConfigError
from vae_jax.models import ModelOutput, build_model
from vae_jax.models.dipvae import aggregate_covariance, covariance_terms
from vae_jax.training import mesh as meshes
from vae_jax.training import train


def _model(dip_type="ii", lambda_od=3.0, lambda_d_factor=1.0, dataset=None):
  config = tiny_config(
    **{
      "model.name": "dipvae",
      "model.dipvae.type": dip_type,
      "model.dipvae.lambda_od": lambda_od,
      "model.dipvae.lambda_d_factor": lambda_d_factor,
    }
  )
  return config, build_model(config.model, dataset.spec)


def _penalty(model, mu, logvar, mask=None):
  outputs = ModelOutput(out=jnp.zeros(()), z=mu, stats={"mu": mu, "logvar": logvar})
  return model.apply({}, outputs, LOCAL, jax.random.key(0), mask, method=model.batch_loss)


def _identity_batch(d=4, mu_var=1.0):
  # Rows +-a e_i: mean 0 and Cov[mu] = (a^2 / d) I exactly.
  a = math.sqrt(d * mu_var)
  mu = np.concatenate([a * np.eye(d), -a * np.eye(d)]).astype(np.float32)
  return jnp.asarray(mu)


def _numpy_penalty(mu, logvar, dip_type, lambda_od, lambda_d):
  cov = np.cov(np.asarray(mu, np.float64), rowvar=False, bias=True)
  if dip_type == "ii":
    cov = cov + np.diag(np.exp(np.asarray(logvar, np.float64)).mean(axis=0))
  off = cov - np.diag(np.diag(cov))
  return lambda_od * np.sum(off**2) + lambda_d * np.sum((np.diag(cov) - 1.0) ** 2)


def test_lambda_d_is_the_factor_times_lambda_od(dataset):
  assert _model("i", 3.0, 10.0, dataset=dataset)[1].lambda_d == 30.0
  assert _model("ii", 3.0, dataset=dataset)[1].lambda_d == 3.0


def test_penalty_is_zero_when_the_covariance_is_the_identity(dataset):
  _, dip_i = _model("i", 10.0, 10.0, dataset=dataset)
  _, dip_ii = _model("ii", 10.0, dataset=dataset)
  mu = _identity_batch()
  loss, metrics = _penalty(dip_i, mu, jnp.full_like(mu, -3.0))
  assert float(loss) == 0.0 and float(metrics["dip_off_diagonal"]) == 0.0
  # Type II adds E[sigma^2]: Cov[mu] = 0.75 I plus sigma^2 = 0.25 is the identity again.
  mu = _identity_batch(mu_var=0.75)
  loss, _ = _penalty(dip_ii, mu, jnp.full_like(mu, math.log(0.25)))
  assert abs(float(loss)) < 1e-10
  assert float(_penalty(dip_i, mu, jnp.full_like(mu, math.log(0.25)))[0]) > 0.1


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_penalty_equals_a_numpy_computation_on_a_known_batch(dataset, dip_type):
  _, model = _model(dip_type, 7.0, 3.0, dataset=dataset)
  k1, k2 = jax.random.split(jax.random.key(0))
  mixing = jnp.array([[1.0, 0.5, 0.0], [0.0, 2.0, -0.3], [0.2, 0.0, 0.7]])
  mu = jax.random.normal(k1, (50, 3)) @ mixing + 1.0
  logvar = jax.random.uniform(k2, (50, 3), minval=-2.0, maxval=0.5)
  loss, metrics = _penalty(model, mu, logvar)
  np.testing.assert_allclose(loss, _numpy_penalty(mu, logvar, dip_type, 7.0, 21.0), rtol=1e-5)
  off, diag = covariance_terms(aggregate_covariance(mu, logvar, dip_type))
  np.testing.assert_allclose(loss, 7.0 * metrics["dip_off_diagonal"] + 21.0 * diag, rtol=1e-6)
  np.testing.assert_allclose(metrics["dip_diagonal"], diag, rtol=1e-6)
  np.testing.assert_allclose(metrics["dip_off_diagonal"], off, rtol=1e-6)


def test_padding_rows_are_left_out_of_the_covariance(dataset):
  _, model = _model("ii", 5.0, dataset=dataset)
  mu = jax.random.normal(jax.random.key(1), (40, 4)) * 2.0
  logvar = jax.random.normal(jax.random.key(2), (40, 4)) * 0.3
  real = _penalty(model, mu[:30], logvar[:30])[0]
  mask = (jnp.arange(40) < 30).astype(jnp.float32)
  padded_mu = mu.at[30:].set(9.0)
  np.testing.assert_allclose(_penalty(model, padded_mu, logvar, mask)[0], real, rtol=1e-5)


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_train_step_penalty_does_not_depend_on_the_device_count(dataset, dip_type):
  config = tiny_config(**{"model.name": "dipvae", "model.dipvae.type": dip_type})
  metrics = device_count_metrics(dataset, config)
  for key in ("dip_off_diagonal", "dip_diagonal", "loss", "grad_norm"):
    np.testing.assert_allclose(metrics[0][key], metrics[1][key], rtol=1e-5, err_msg=key)
  assert float(metrics[1]["dip_off_diagonal"]) > 0


@pytest.mark.parametrize("num_devices", [1, 4])
def test_sharded_gradient_equals_global_batch_gradient(dataset, num_devices):
  test_steps.test_sharded_gradient_equals_global_batch_gradient(
    dataset, {"model.name": "dipvae", "model.dipvae.type": "i"}, num_devices
  )


def test_eval_batch_loss_leaves_padding_out_on_four_devices(dataset):
  check_eval_batch_loss_leaves_padding_out(dataset, tiny_config(**{"model.name": "dipvae"}))


@pytest.mark.parametrize(
  "overrides,field",
  [
    ({"model.dipvae.type": "iii"}, "model.dipvae.type"),
    ({"model.dipvae.lambda_od": -1.0}, "model.dipvae.lambda_od"),
    ({"model.dipvae.lambda_d_factor": -2.0}, "model.dipvae.lambda_d_factor"),
    ({"data.batch_size": 1}, "data.batch_size"),
  ],
)
def test_invalid_dipvae_config_names_the_field(overrides, field):
  config = tiny_config(**{"model.name": "dipvae", **overrides})
  with pytest.raises(ConfigError, match=field):
    configuration.validate(config, 1)


@pytest.mark.slow
def test_the_dsprites_config_trains_end_to_end(tmp_path):
  config = shrink(
    dsprites_dipvae.get_config("quick"),
    **{"num_train_steps": 2, "data.batch_size": 8, "data.num_eval_examples": 16},
  )
  config.update_from_flattened_dict({"eval_every_steps": 2, "checkpoint_every_steps": 2})
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir, mesh=meshes.make_mesh(jax.devices()[:2]))
  assert results["step"] == 2
  c = config.model.dipvae
  expected = c.lambda_od * (results["eval_dip_off_diagonal"] + results["eval_dip_diagonal"])
  np.testing.assert_allclose(results["eval_batch_loss"], expected, rtol=1e-5)
