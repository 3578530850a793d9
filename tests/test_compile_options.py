import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.training import compile_options


def _layer(w, x):
  return jnp.maximum(x @ w, 0.0).sum(axis=0)


def test_step_options_move_dense_layers_off_ynnpack_and_keep_the_numbers():
  options = compile_options.step_options()
  w = jax.random.normal(jax.random.key(0), (64, 32))
  x = jax.random.normal(jax.random.key(1), (16, 64))
  default = jax.jit(_layer).lower(w, x).compile()
  tuned = jax.jit(_layer, compiler_options=options).lower(w, x).compile()
  np.testing.assert_allclose(tuned(w, x), default(w, x), rtol=1e-5, atol=1e-5)
  if options is not None:
    assert jax.default_backend() == "cpu"
    assert "__ynn_fusion" not in tuned.as_text()
