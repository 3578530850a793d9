import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.models.upconv import UpConv, same_conv_stride2


def _naive_transposed_conv(x, w, pad_before):
  """out[2i + k - p] += x[i] @ w[k], cropped to twice the input size (the textbook definition)."""
  b, h, wd, _ = x.shape
  k = w.shape[0]
  out = np.zeros((b, 2 * h, 2 * wd, w.shape[-1]))
  for i in range(h):
    for j in range(wd):
      for ky in range(k):
        for kx in range(k):
          oy, ox = 2 * i + ky - pad_before, 2 * j + kx - pad_before
          if 0 <= oy < 2 * h and 0 <= ox < 2 * wd:
            out[:, oy, ox] += x[:, i, j] @ w[ky, kx]
  return out


@pytest.mark.parametrize("impl", ["phase", "xla"])
@pytest.mark.parametrize("kernel_size", [3, 4])
def test_upconv_matches_the_textbook_definition(kernel_size, impl):
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  module = UpConv(6, kernel_size, impl=impl)
  params = module.init(jax.random.key(1), x)
  params["params"]["bias"] = jnp.arange(6.0)
  w = np.asarray(params["params"]["kernel"])
  expected = _naive_transposed_conv(np.asarray(x), w, (kernel_size - 2) // 2) + np.arange(6.0)
  np.testing.assert_allclose(module.apply(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_upconv_is_the_adjoint_of_the_same_strided_conv(kernel_size):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  module = UpConv(5, kernel_size, bias_init=jax.nn.initializers.zeros)
  params = module.init(jax.random.key(1), x)
  w = params["params"]["kernel"]
  y = module.apply(params, x)
  assert y.shape == (2, 12, 12, 5)
  u = jax.random.normal(jax.random.key(2), y.shape)
  np.testing.assert_allclose(
    jnp.vdot(y, u), jnp.vdot(x, same_conv_stride2(u, jnp.swapaxes(w, 2, 3))), rtol=1e-5
  )
