"""Mixed precision (`config.dtype`): bfloat16 compute, float32 params, state, loss and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.errors import ConfigError
from vae_jax.models import build_model
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import precision, steps
from vae_jax.training import state as state_lib


def test_cast_floating_casts_only_floating_arrays():
  tree = {"w": jnp.ones(3), "i": jnp.arange(3), "k": jax.random.key(0), "n": None}
  cast = precision.cast_floating(tree, jnp.bfloat16)
  assert cast["w"].dtype == jnp.bfloat16
  assert cast["i"].dtype == jnp.int32
  assert jnp.issubdtype(cast["k"].dtype, jax.dtypes.prng_key)
  assert cast["n"] is None


def _loss_and_grads(config, dataset, compute_dtype):
  model = build_model(config.model, dataset.spec)
  state = state_lib.init_state(model, optax.sgd(1.0), jax.random.key(0), dataset.spec)
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(16, 0).batch(0))
  keys = prng.example_keys(jax.random.key(1), 0, jnp.arange(16))

  def loss(params):
    (terms, outputs), new_state = steps.forward_terms(
      model, params, batch, keys, config, state.model_state, True, 0, compute_dtype
    )
    return -jnp.mean(terms["elbo"]), (terms, new_state)

  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, (terms, new_state)), grads = grad_fn(state.params)
  return value, terms, new_state, grads


@pytest.mark.parametrize(
  "overrides, loss_rtol",
  [
    ({}, 0.01),
    ({"model.arch": "conv"}, 0.01),
    ({"model.name": "vqvae", "model.arch": "conv"}, 0.1),
  ],
  ids=["mlp", "conv", "vqvae_ema"],
)
def test_bfloat16_loss_and_gradients_are_float32_and_close(dataset, overrides, loss_rtol):
  # bfloat16 keeps 8 bits of mantissa: the loss moves, but little.
  config = tiny_config(**overrides)
  f32 = _loss_and_grads(config, dataset, None)
  bf16 = _loss_and_grads(config, dataset, jnp.bfloat16)
  loss32, loss16 = float(f32[0]), float(bf16[0])
  assert np.isfinite(loss16) and loss16 != loss32
  assert abs(loss16 - loss32) < loss_rtol * abs(loss32), (loss16, loss32)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(bf16[1]))
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(bf16[3]))
  # Kernels only, to 20%: a bias gradient is a sum over batch x pixels, which XLA:CPU accumulates
  # in bfloat16 (a full-resolution output bias loses most of its gradient; see precision.py), and
  # a conv kernel's gradient sums over positions too (VQ-VAE's first conv: 17% off).
  kernels = [
    (g, h)
    for (path, g), h in zip(
      jax.tree_util.tree_leaves_with_path(f32[3]), jax.tree.leaves(bf16[3]), strict=True
    )
    if g.ndim >= 2 and float(jnp.linalg.norm(g)) > 0
  ]
  for g32, g16 in kernels:
    assert float(jnp.linalg.norm(g16 - g32)) < 0.2 * float(jnp.linalg.norm(g32))
  for s32, s16 in zip(jax.tree.leaves(f32[2]), jax.tree.leaves(bf16[2]), strict=True):
    assert s16.dtype == s32.dtype


def test_training_step_with_bfloat16_keeps_float32_params(dataset):
  config = tiny_config(dtype="bfloat16")
  model = build_model(config.model, dataset.spec)
  mesh = meshes.make_mesh()
  tx = optax.adam(1e-3)
  state = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec)
  step = steps.make_train_step(model, tx, config, mesh)
  batch = jax.device_put(dataset.train_stream(32, 0).batch(0), meshes.batch_sharded(mesh))
  new_state, metrics = step(state, batch, jax.random.key(1))
  assert np.isfinite(float(jax.device_get(metrics["loss"])))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new_state.params))


def test_unknown_dtype_is_a_config_error():
  config = tiny_config(dtype="float16")
  configuration.resolve(config)
  with pytest.raises(ConfigError, match="dtype='float16'"):
    configuration.validate(config, 1)
