"""FactorVAE: gradients split between VAE and discriminator, the permutation, its own optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.collectives import LOCAL
from vae_jax.errors import ConfigError
from vae_jax.losses import elbo
from vae_jax.models import build_model
from vae_jax.models.factorvae import DISCRIMINATOR, discriminator_terms, permute_dims
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib
from vae_jax.training import steps, train

OVERRIDES = {
  "model.name": "factorvae",
  "model.factorvae.gamma": 10.0,
  "model.factorvae.discriminator_hidden_sizes": (16, 16),
  "model.factorvae.discriminator_learning_rate": 1e-3,
}


def _setup(dataset, **overrides):
  config = tiny_config(**{**OVERRIDES, **overrides})
  model = build_model(config.model, dataset.spec)
  own = model.param_optimizers(config.model)
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps, own)
  state = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec)
  return config, model, tx, state


def test_permutation_keeps_each_column_and_shuffles_columns_independently():
  z = jax.random.normal(jax.random.key(0), (64, 5))
  permuted = np.asarray(permute_dims(z, jax.random.key(1)))
  z = np.asarray(z)
  np.testing.assert_array_equal(np.sort(permuted, axis=0), np.sort(z, axis=0))
  # order[d][b]: the row of z whose value row b of the permutation holds in column d.
  order = [np.array([np.flatnonzero(z[:, d] == v)[0] for v in permuted[:, d]]) for d in range(5)]
  assert len({tuple(o) for o in order}) == 5  # Each dimension its own permutation.
  assert all(np.mean(o == np.arange(64)) < 0.2 for o in order)
  again = permute_dims(jnp.asarray(z), jax.random.key(1))
  np.testing.assert_array_equal(again, permuted)


def test_permutation_of_the_gathered_batch_is_the_same_on_1_and_4_devices():
  z = jax.random.normal(jax.random.key(0), (32, 3))
  key = jax.random.key(7)
  expected = permute_dims(z, key)
  mesh = meshes.make_mesh(jax.devices()[:4])

  def per_device(z_shard):
    return permute_dims(meshes.DATA_COLLECTIVES.gather(z_shard), key)

  got = jax.shard_map(
    per_device, mesh=mesh, in_specs=P(meshes.DATA_AXIS), out_specs=P(), check_vma=False
  )(z)
  np.testing.assert_array_equal(got, expected)


def test_encode_decode_and_generate_are_the_inner_vae(dataset):
  config, model, _, state = _setup(dataset)
  assert set(state.params) == {"vae", DISCRIMINATOR}
  x = jnp.asarray(dataset.test_images[:4], jnp.float32) / 255.0
  inner = model.vae.clone(parent=None)
  vae_vars = {"params": state.params["vae"]}
  outer_vars = {"params": state.params}
  np.testing.assert_array_equal(
    model.apply(outer_vars, x, method=model.encode).mean,
    inner.apply(vae_vars, x, method=inner.encode).mean,
  )
  rng = jax.random.key(3)
  np.testing.assert_array_equal(
    model.apply(outer_vars, rng, 2, method=model.generate),
    inner.apply(vae_vars, rng, 2, method=inner.generate),
  )


def test_combined_gradient_is_each_groups_own_loss_gradient(dataset):
  config, model, _, state = _setup(dataset)
  params = state.params
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(32, 0).batch(0))
  keys = prng.example_keys(jax.random.key(1), 0, jnp.arange(32))
  rng = jax.random.key(2)
  gamma = config.model.factorvae.gamma

  def logits(p, z):
    return model.apply({"params": p}, z, method=model.discriminator_logits)

  def combined(p):
    terms, outputs = steps.forward_terms(model, p, batch, keys, config)
    loss = elbo.loss_from_terms(terms, config.objective, 0)[0]
    extra, _ = model.apply({"params": p}, outputs, LOCAL, rng, method=model.batch_loss)
    return loss + extra

  def vae_loss(vae_params):  # The ELBO loss plus gamma * TC under a fixed discriminator.
    p = {**params, "vae": vae_params}
    terms, outputs = steps.forward_terms(model, p, batch, keys, config)
    fixed = logits(params, outputs.z)
    tc = jnp.mean(fixed[:, 0] - fixed[:, 1])
    return elbo.loss_from_terms(terms, config.objective, 0)[0] + gamma * tc

  _, outputs = steps.forward_terms(model, params, batch, keys, config)
  z = outputs.z

  def discriminator_loss(d_params):  # Cross-entropy on fixed latents.
    p = {**params, "discriminator": d_params}
    terms = discriminator_terms(logits(p, z), logits(p, permute_dims(z, rng)))
    return 0.5 * (terms["real_nll"].mean() + terms["permuted_nll"].mean())

  got = jax.jit(jax.grad(combined))(params)
  expected = {
    "vae": jax.jit(jax.grad(vae_loss))(params["vae"]),
    "discriminator": jax.jit(jax.grad(discriminator_loss))(params["discriminator"]),
  }
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6 * float(np.abs(e).max()) + 1e-8)
  assert all(float(jnp.abs(e).max()) > 0 for e in jax.tree.leaves(expected["discriminator"]))


def test_discriminator_gets_its_own_adam(dataset):
  config, _, tx, state = _setup(
    dataset,
    **{"model.factorvae.discriminator_learning_rate": 1e-2, "optimizer.learning_rate": 1e-3},
  )
  params = state.params
  references = {
    "vae": optax.adam(1e-3),  # b1 = 0.9, b2 = 0.999
    "discriminator": optax.adam(1e-2, b1=0.5, b2=0.9),
  }
  ref_states = {k: references[k].init(params[k]) for k in references}
  opt_state = state.opt_state
  for seed in range(2):
    grads = jax.tree.map(lambda p, s=seed: jax.random.normal(jax.random.key(s), p.shape), params)
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    for k, ref in references.items():
      expected, ref_states[k] = jax.jit(ref.update)(grads[k], ref_states[k], params[k])
      for u, e in zip(jax.tree.leaves(updates[k]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(u, e, rtol=1e-6, atol=1e-12)
  # Without optimizers of its own the plain Adam state is unchanged (old checkpoints restore).
  plain, _ = optim.make_optimizer(config.optimizer, 8)
  adam_state = optax.adam(optax.constant_schedule(1e-3)).init(params)
  assert jax.tree.structure(plain.init(params)) == jax.tree.structure(adam_state)


def test_train_steps_lower_the_vae_loss_and_match_on_1_and_4_devices(dataset):
  config, model, tx, state = _setup(dataset)
  state = jax.device_get(state)
  rng = jax.random.key(0)
  stream = dataset.train_stream(32, 0)
  history = {}
  for num_devices in (1, 4):
    mesh = meshes.make_mesh(jax.devices()[:num_devices])
    train_step = steps.make_train_step(model, tx, config, mesh)
    local = jax.device_put(state, meshes.replicated(mesh))
    history[num_devices] = []
    for i in range(30 if num_devices == 1 else 2):
      batch = jax.device_put(stream.batch(i), meshes.batch_sharded(mesh))
      local, metrics = train_step(local, batch, rng)
      history[num_devices].append(jax.device_get(metrics))
  for name in ("tc_estimate", "discriminator_loss", "discriminator_accuracy", "loss", "elbo"):
    for a, b in zip(history[1][:2], history[4], strict=True):
      np.testing.assert_allclose(a[name], b[name], rtol=2e-5, atol=1e-6)

  def vae_loss(m):
    return -m["elbo"] + config.model.factorvae.gamma * m["tc_estimate"]

  first, last = history[1][:5], history[1][-5:]
  assert np.mean([vae_loss(m) for m in last]) < 0.9 * np.mean([vae_loss(m) for m in first])
  assert all(np.isfinite(m["discriminator_loss"]) for m in history[1])


@pytest.mark.parametrize(
  "overrides,field",
  [
    (
      {"model.factorvae.discriminator_learning_rate": 0.0},
      "model.factorvae.discriminator_learning_rate",
    ),
    (
      {"model.factorvae.discriminator_hidden_sizes": (16, 0)},
      "model.factorvae.discriminator_hidden_sizes",
    ),
    ({"model.factorvae.gamma": -1.0}, "model.factorvae.gamma"),
  ],
)
def test_invalid_factorvae_config_names_the_field(overrides, field):
  config = tiny_config(**{**OVERRIDES, **overrides})
  with pytest.raises(ConfigError, match=field):
    configuration.validate(config, 1)


def test_discriminator_fields_on_another_family_are_refused():
  config = tiny_config(**OVERRIDES)
  config.model.name = "vae"
  with pytest.raises(ConfigError, match="model.factorvae configures another family"):
    configuration.resolve(config)


@pytest.mark.slow
def test_factorvae_trains_evaluates_and_resumes(dataset, tmp_path):
  config = tiny_config(**OVERRIDES)
  config.num_train_steps = 4
  first = train.train_and_evaluate(config, str(tmp_path), dataset=dataset)
  config.num_train_steps = 8
  second = train.train_and_evaluate(config, str(tmp_path), dataset=dataset)
  assert np.isfinite(first["eval_elbo"]) and np.isfinite(second["eval_elbo"])
