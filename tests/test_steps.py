"""The data-parallel step against plain `jax.grad` of the global-batch loss.

SGD with learning rate 1 makes the parameter change equal to minus the gradient, so these tests see
the gradient's scale, which Adam (invariant to it) would hide.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import tiny_config
from vae_jax.collectives import LOCAL
from vae_jax.losses import distributions, elbo
from vae_jax.models import build_model
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import state as state_lib
from vae_jax.training import steps


@pytest.mark.parametrize("num_devices", [1, 4])
@pytest.mark.parametrize(
  "overrides",
  [
    {},
    pytest.param({"model.name": "cvae", "model.arch": "conv"}, marks=pytest.mark.slow),
    {"objective.free_bits": 0.3},
    {"objective.kl_penalty": "capacity", "objective.capacity_steps": 4},
    {"objective.estimator": "iwae", "objective.num_samples": 3},
    {"model.name": "hvae", "model.hvae.lower_dims": (6,), "objective.free_bits": 0.05},
    {"model.name": "iaf", "model.iaf.hidden_sizes": (16,), "model.iaf.context_dim": 3},
    {"model.name": "btcvae"},
    {"model.name": "factorvae", "model.factorvae.discriminator_hidden_sizes": (16, 16)},
  ],
)
def test_sharded_gradient_equals_global_batch_gradient(dataset, overrides, num_devices):
  config = tiny_config(**{"data.binarize": "dynamic", **overrides})
  model = build_model(config.model, dataset.spec)
  tx = optax.sgd(1.0)
  rng = jax.random.key(0)
  state = state_lib.init_state(model, tx, rng, dataset.spec)
  batch = dataset.train_stream(32, 0).batch(0)
  keys = prng.example_keys(rng, 0, jnp.arange(32))

  def global_loss(params):
    terms, outputs = steps.forward_terms(
      model, params, jax.tree.map(jnp.asarray, batch), keys, config
    )
    loss = elbo.loss_from_terms(terms, config.objective, 0)[0]
    if model.capabilities.batch_loss:  # Whole-batch terms: LOCAL collectives see the global batch.
      args = (outputs, LOCAL, prng.batch_key(rng, 0))
      loss += model.apply({"params": params}, *args, method=model.batch_loss)[0]
    return loss

  expected = jax.grad(global_loss)(state.params)
  mesh = meshes.make_mesh(jax.devices()[:num_devices])
  before = jax.device_get(state.params)
  state = jax.device_put(state, meshes.replicated(mesh))
  train_step = steps.make_train_step(model, tx, config, mesh)
  after, metrics = train_step(state, jax.device_put(batch, meshes.batch_sharded(mesh)), rng)
  got = jax.tree.map(lambda a, b: a - b, before, jax.device_get(after.params))
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(g, e, atol=1e-5 * float(np.abs(e).max()) + 1e-7)
  np.testing.assert_allclose(metrics["grad_norm"], optax.global_norm(expected), rtol=1e-5)


def test_log_grad_norm_false_drops_the_metric_and_changes_no_number(dataset):
  results = []
  for log_grad_norm in (True, False):
    config = tiny_config(**{"data.binarize": "dynamic", "log_grad_norm": log_grad_norm})
    model = build_model(config.model, dataset.spec)
    tx = optax.adam(1e-3)
    rng = jax.random.key(0)
    state = state_lib.init_state(model, tx, rng, dataset.spec)
    mesh = meshes.make_mesh(jax.devices()[:1])
    train_step = steps.make_train_step(model, tx, config, mesh)
    results.append(train_step(state, dataset.train_stream(32, 0).batch(0), rng))
  (with_norm, metrics_with), (without, metrics_without) = results
  assert set(metrics_with) - set(metrics_without) == {"grad_norm"}
  for a, b in zip(jax.tree.leaves(with_norm.params), jax.tree.leaves(without.params), strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(metrics_with["loss"], metrics_without["loss"])


def test_example_keys_fold_in_step_then_global_index():
  rng = jax.random.key(3)
  keys = prng.example_keys(rng, 5, jnp.arange(4))
  expected = jax.random.fold_in(jax.random.fold_in(rng, 5), 2)
  np.testing.assert_array_equal(jax.random.key_data(keys[2]), jax.random.key_data(expected))
  other_step = prng.example_keys(rng, 6, jnp.arange(4))
  data = jax.random.key_data
  assert len({data(k).tobytes() for k in (*keys, *other_step)}) == 8


def test_iwae_with_one_sample_is_the_monte_carlo_elbo_of_the_same_sample(dataset):
  config = tiny_config(**{"objective.estimator": "iwae", "objective.num_samples": 1})
  model = build_model(config.model, dataset.spec)
  state = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec)
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(8, 0).batch(0))
  keys = prng.example_keys(jax.random.key(1), 0, jnp.arange(8))
  terms, outputs = steps.forward_terms(model, state.params, batch, keys, config)
  mc_elbo = terms["recon"] + outputs.log_p_z - outputs.log_q_z
  np.testing.assert_allclose(terms["iwae"], mc_elbo, rtol=1e-6)
  weights = steps.importance_log_weights(
    model, {"params": state.params}, batch, keys, config, jnp.arange(1)
  )
  np.testing.assert_allclose(weights[0], mc_elbo, rtol=1e-6)


def test_importance_weights_do_not_depend_on_chunking_and_bound_grows_with_k(dataset):
  config = tiny_config()
  model = build_model(config.model, dataset.spec)
  state = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec)
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(8, 0).batch(0))
  keys = prng.example_keys(jax.random.key(1), 0, jnp.arange(8))
  model_vars = {"params": state.params}
  whole = steps.importance_log_weights(model, model_vars, batch, keys, config, jnp.arange(64))
  part = steps.importance_log_weights(model, model_vars, batch, keys, config, jnp.arange(32, 64))
  np.testing.assert_allclose(part, whole[32:], rtol=1e-6)
  bound_1 = float(whole.mean())
  bound_64 = float(distributions.logmeanexp(whole, axis=0).mean())
  assert bound_64 > bound_1
