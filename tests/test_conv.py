import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import beta4
from vae_jax.data.spec import DataSpec
from vae_jax.models import build_model, conv_ops
from vae_jax.models.upconv import UpConv

NHWC = ("NHWC", "HWIO", "NHWC")


def _normal(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _assert_vjps_equal(fast, plain, args, seed=9, rtol=1e-5):
  """Outputs and the VJPs (w.r.t. every argument) of a random cotangent agree."""
  y, fast_vjp = jax.vjp(fast, *args)
  y_ref, plain_vjp = jax.vjp(plain, *args)
  assert y.shape == y_ref.shape
  scale = float(jnp.max(jnp.abs(y_ref)))
  np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=rtol * scale)
  g = _normal(seed, y.shape)
  for got, want in zip(jax.jit(fast_vjp)(g), jax.jit(plain_vjp)(g), strict=True):
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(
  ("size", "kernel", "padding"),
  [
    ((32, 32), 4, "SAME"),  # the beta4 encoder's layers
    ((16, 16), 3, "SAME"),  # mnist_conv's
    ((7, 9), 4, "SAME"),
    ((9, 7), 3, "SAME"),
    ((8, 8), 5, "SAME"),
    ((9, 10), 2, "VALID"),
    ((11, 8), 1, "SAME"),
    ((10, 9), 3, ((2, 0), (1, 3))),
  ],
)
def test_stride2_conv_equals_lax_forward_and_gradients(size, kernel, padding):
  x, w = _normal(0, (3, *size, 5)), _normal(1, (kernel, kernel, 5, 6))
  _assert_vjps_equal(
    lambda x, w: conv_ops.conv_general_dilated(x, w, (2, 2), padding, dimension_numbers=NHWC),
    lambda x, w: lax.conv_general_dilated(x, w, (2, 2), padding, dimension_numbers=NHWC),
    (x, w),
  )


def test_non_square_kernel():
  x, w = _normal(0, (2, 9, 8, 3)), _normal(1, (3, 4, 3, 2))
  _assert_vjps_equal(
    lambda x, w: conv_ops.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC),
    lambda x, w: lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC),
    (x, w),
  )


@pytest.mark.parametrize("padding", [((0, 0), (0, 0)), ((1, 1), (1, 1)), ((2, 0), (0, 1))])
def test_conv_stride1_custom_vjp_equals_autodiff(padding):
  x, w = _normal(0, (3, 7, 6, 4)), _normal(1, (3, 2, 4, 5))
  _assert_vjps_equal(
    lambda x, w: conv_ops.conv_stride1(x, w, padding),
    lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC),
    (x, w),
  )


def test_flax_conv_with_the_fast_path_has_the_same_parameters_and_outputs():
  x = _normal(0, (2, 12, 12, 3))
  plain = nn.Conv(4, (4, 4), strides=(2, 2), padding="SAME")
  fast = nn.Conv(
    4, (4, 4), strides=(2, 2), padding="SAME", conv_general_dilated=conv_ops.conv_general_dilated
  )
  params = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, fast.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)


def test_other_convolutions_go_to_lax_unchanged():
  x, w = _normal(0, (2, 9, 9, 3)), _normal(1, (3, 3, 3, 4))
  for kwargs in ({"window_strides": (1, 1)}, {"window_strides": (2, 2), "rhs_dilation": (2, 2)}):
    args = dict(padding="SAME", dimension_numbers=NHWC, **kwargs)
    np.testing.assert_array_equal(
      conv_ops.conv_general_dilated(x, w, **args), lax.conv_general_dilated(x, w, **args)
    )


@pytest.mark.parametrize(
  ("kernel", "size", "features"),
  [
    (4, (4, 4), 12),
    (4, (5, 3), 1),
    (3, (6, 5), 12),
    (3, (6, 5), 2),
    (5, (4, 6), 12),
    (5, (3, 4), 1),
  ],
)
def test_upconv_phase_path_equals_the_shared_window_path(kernel, size, features):
  """Both phase forms: a convolution with 4F outputs (F >= 8), one tap matmul (F < 8)."""
  x, w = _normal(0, (2, *size, 3)), _normal(1, (kernel, kernel, 3, features))

  def upconv(impl):
    module = UpConv(features, kernel, impl=impl)
    bias = jnp.arange(float(features))
    return lambda x, w: module.apply({"params": {"kernel": w, "bias": bias}}, x)

  _assert_vjps_equal(upconv("phase"), upconv("xla"), (x, w))


def test_use_fast_path():
  assert conv_ops.use_fast_path("phase") and not conv_ops.use_fast_path("xla")
  assert conv_ops.use_fast_path("auto") == (jax.default_backend() == "cpu")
  with pytest.raises(ValueError, match="Unknown conv implementation"):
    conv_ops.use_fast_path("fast")


def _with_conv_impl(model, impl):
  return model.clone(
    encoder=model.encoder.clone(conv_impl=impl), decoder=model.decoder.clone(conv_impl=impl)
  )


@pytest.mark.slow
def test_beta4_model_fast_path_gives_the_default_paths_loss_and_gradients():
  config = beta4.get_config()
  base = build_model(config.model, DataSpec((64, 64, 1), 0, 100))
  x = (jax.random.uniform(jax.random.key(0), (4, 64, 64, 1)) < 0.2).astype(jnp.float32)
  keys = jax.random.split(jax.random.key(1), 4)
  fast, plain = _with_conv_impl(base, "phase"), _with_conv_impl(base, "xla")
  params = plain.init(jax.random.key(2), x, keys)["params"]
  shapes = jax.tree.map(jnp.shape, fast.init(jax.random.key(2), x, keys)["params"])
  assert shapes == jax.tree.map(jnp.shape, params)

  def loss(model):
    def f(p):
      o = model.apply({"params": p}, x, keys)
      rec = jnp.sum(jnp.maximum(o.out, 0) - o.out * x + jnp.log1p(jnp.exp(-jnp.abs(o.out))))
      return rec + config.objective.beta * jnp.sum(o.kl_per_dim)

    return jax.jit(jax.value_and_grad(f))(params)

  (l_fast, g_fast), (l_plain, g_plain) = loss(fast), loss(plain)
  np.testing.assert_allclose(l_fast, l_plain, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(want))))


@pytest.mark.slow
def test_vmapped_over_members_like_the_vectorized_sweep():
  """Inputs and kernels both batched (a vectorized sweep's members): the VJPs still agree."""
  x, w = _normal(0, (2, 3, 8, 8, 4)), _normal(1, (2, 4, 4, 4, 5))
  _assert_vjps_equal(
    jax.vmap(
      lambda x, w: conv_ops.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
    ),
    jax.vmap(lambda x, w: lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)),
    (x, w),
  )
  x = _normal(2, (2, 3, 4, 4, 6))
  up_w = _normal(3, (2, 4, 4, 6, 12))
  dec = {impl: UpConv(12, 4, impl=impl) for impl in ("phase", "xla")}
  apply = {
    impl: jax.vmap(lambda x, w, m=m: m.apply({"params": {"kernel": w, "bias": jnp.zeros(12)}}, x))
    for impl, m in dec.items()
  }
  _assert_vjps_equal(apply["phase"], apply["xla"], (x, up_w))
