"""The discretized logistic mixture likelihood: a pmf over 8-bit pixels, against numpy, sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.losses import likelihoods
from vae_jax.losses import logistic_mixture as lm


def _sigmoid(t):
  return 1.0 / (1.0 + np.exp(-t))


def _numpy_log_prob(k: np.ndarray, params: np.ndarray) -> np.ndarray:
  """Direct float64 log p of one pixel's channel values k [C] (0..255) under params [K, P]."""
  num_k, p = params.shape
  c = lm.channels_of(p)
  logits = params[:, 0]
  log_pi = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
  v = 2.0 * k / 255.0 - 1.0
  total = 0.0
  for j in range(num_k):
    loc = params[j, 1 : 1 + c]
    scale = np.exp(np.maximum(params[j, 1 + c : 1 + 2 * c], -7.0))
    alpha = np.tanh(params[j, 1 + 2 * c :])
    prob, a = math.exp(log_pi[j]), 0
    for ch in range(c):
      m = loc[ch] + sum(alpha[a + i] * v[i] for i in range(ch))
      a += ch
      hi = 1.0 if k[ch] == 255 else _sigmoid((v[ch] + 1 / 255 - m) / scale[ch])
      lo = 0.0 if k[ch] == 0 else _sigmoid((v[ch] - 1 / 255 - m) / scale[ch])
      prob *= hi - lo
    total += prob
  return np.log(total)


def _params(key, shape, scale=1.0):
  return scale * jax.random.normal(key, shape)


@pytest.mark.parametrize("num_k", [1, 3])
def test_gray_pmf_sums_to_one_over_the_256_values(num_k):
  params = _params(jax.random.key(0), (1, 1, 4, num_k, lm.params_per_component(1)))
  # Four pixels with different parameters; every pixel's 256 values enumerated as a batch.
  x = (jnp.arange(256.0) / 255.0).reshape(256, 1, 1, 1) * jnp.ones((1, 1, 4, 1))
  lp = lm.log_prob_per_pixel(x, jnp.broadcast_to(params, (256, *params.shape[1:])))
  np.testing.assert_allclose(jnp.exp(jax.nn.logsumexp(lp, axis=0)), 1.0, atol=1e-5)


def test_rgb_pmf_sums_to_one_over_all_256_cubed_colours():
  """Exact enumeration of the joint over (r, g, b) of one pixel, with channel coupling."""
  num_k = 2
  params = _params(jax.random.key(1), (num_k, lm.params_per_component(3)))
  params = params.at[:, 4:7].set(-2.0)  # scales ~0.14: the mass spreads over many bins
  grid = jnp.arange(256.0) / 255.0
  g, b = jnp.meshgrid(grid, grid, indexing="ij")

  @jax.jit
  def chunk(r):  # all (g, b) for 16 red values: [16, 256, 256] pixels
    x = jnp.stack(jnp.broadcast_arrays(r[:, None, None], g[None], b[None]), axis=-1)
    return jax.nn.logsumexp(lm.log_prob_per_pixel(x, params))

  totals = [chunk(grid[i : i + 16]) for i in range(0, 256, 16)]
  np.testing.assert_allclose(jnp.exp(jax.nn.logsumexp(jnp.stack(totals))), 1.0, atol=1e-4)


def test_matches_a_direct_numpy_implementation():
  rng = np.random.default_rng(0)
  num_k, p = 4, lm.params_per_component(3)
  params = rng.normal(size=(5, num_k, p))
  params[..., 4:7] = rng.uniform(-4.0, 0.0, size=(5, num_k, 3))
  k = np.array([[0, 17, 255], [255, 255, 0], [128, 3, 200], [0, 0, 0], [90, 91, 92]])
  want = [_numpy_log_prob(k[i], params[i]) for i in range(5)]
  x = jnp.asarray(k / 255.0, jnp.float32).reshape(1, 1, 5, 3)
  got = lm.log_prob_per_pixel(x, jnp.asarray(params, jnp.float32)[None, None])[0, 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  summed = likelihoods.log_likelihood(
    x, jnp.asarray(params, jnp.float32)[None, None], "logistic_mixture"
  )
  np.testing.assert_allclose(summed, [np.sum(want)], rtol=1e-5)


def test_one_component_is_a_single_discretized_logistic_per_channel():
  """K = 1: the mixture weight drops out and (uncoupled) channels are independent logistics."""
  loc, log_scale = 0.3, -3.0
  params = jnp.array([[5.0, loc, log_scale]])  # K = 1, C = 1: any logit gives weight 1
  k = jnp.array([0.0, 1.0, 100.0, 150.0, 254.0, 255.0])
  x = (k / 255.0).reshape(1, 1, 6, 1)
  got = lm.log_prob_per_pixel(x, jnp.broadcast_to(params, (1, 1, 6, 1, 3)))[0, 0]
  s, k = math.exp(log_scale), np.asarray(k, np.float64)
  v = 2 * k / 255 - 1
  hi = np.where(k == 255, 1.0, _sigmoid((v + 1 / 255 - loc) / s))
  lo = np.where(k == 0, 0.0, _sigmoid((v - 1 / 255 - loc) / s))
  np.testing.assert_allclose(got, np.log(hi - lo), rtol=1e-5)


def test_far_tail_is_finite_and_agrees_with_the_log_pdf_approximation():
  """Where sigmoid differences underflow, the exact identity still matches log pdf + log(2/255)."""
  loc, log_scale = jnp.array(-0.9), jnp.array(-7.0)  # a sharp peak far below the pixel values
  k = jnp.array([200.0, 230.0, 254.0])
  v = 2 * k / 255 - 1
  x = (k / 255.0).reshape(1, 1, 3, 1)
  params = jnp.broadcast_to(jnp.array([[0.0, loc, log_scale]]), (1, 1, 3, 1, 3))
  got = lm.log_prob_per_pixel(x, params)[0, 0]
  naive = jnp.log(
    jax.nn.sigmoid((v + 1 / 255 - loc) * 1096.6) - jax.nn.sigmoid((v - 1 / 255 - loc) * 1096.6)
  )
  assert not np.isfinite(naive).any()  # float32 cdf difference underflows to 0
  assert np.isfinite(got).all() and (got < -1000).all()
  approx = lm.log_pdf_bin_approximation(v, loc, log_scale)
  np.testing.assert_allclose(got, approx, rtol=2e-3)


def test_gradients_are_finite_at_the_extremes():
  c, num_k = 3, 2
  p = lm.params_per_component(c)
  params = jnp.zeros((1, 2, 2, num_k, p))
  params = params.at[..., 1:4].set(jnp.array([-30.0, 30.0, 0.0]))  # far outside [-1, 1]
  params = params.at[..., 4:7].set(jnp.array([-20.0, 10.0, -7.0]))  # below the floor, huge
  params = params.at[..., 7:].set(50.0)  # saturated coupling
  x = jnp.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).reshape(1, 2, 2, 3)
  value, grad = jax.value_and_grad(lambda q: lm.log_likelihood(x, q).sum())(params)
  assert np.isfinite(value)
  assert np.isfinite(grad).all()


def test_samples_are_8_bit_and_follow_the_pmf():
  """Gray pixels: the empirical histogram of draws matches the enumerated pmf."""
  params = jnp.array([[0.5, -0.4, -2.5], [-0.5, 0.5, -3.0]])  # K = 2, C = 1
  n = 20_000
  out = jnp.broadcast_to(params, (n, 1, 1, 2, 3))
  keys = jax.random.split(jax.random.key(3), n)
  x = likelihoods.sample(keys, out, "logistic_mixture")
  assert x.shape == (n, 1, 1, 1)
  k = np.asarray(x).ravel() * 255
  np.testing.assert_allclose(k, np.round(k), atol=1e-3)
  grid = (jnp.arange(256.0) / 255).reshape(256, 1, 1, 1)
  pmf = np.exp(lm.log_prob_per_pixel(grid, jnp.broadcast_to(params, (256, 1, 1, 2, 3))).ravel())
  # Compare in 16 coarse bins (16 values each): the histogram error is ~1/sqrt(n) per bin.
  emp = np.bincount(np.round(k).astype(int) // 16, minlength=16) / n
  np.testing.assert_allclose(emp, pmf.reshape(16, 16).sum(1), atol=0.012)
  # The mean image is the mixture mean of the continuous logistics (here nearly all inside).
  mean = likelihoods.decoder_mean(out[:1], "logistic_mixture")
  w = np.exp(params[:, 0]) / np.exp(params[:, 0]).sum()
  np.testing.assert_allclose(mean.ravel(), [(w @ params[:, 1] + 1) / 2], atol=1e-5)
  np.testing.assert_allclose(k.mean() / 255, (w @ params[:, 1] + 1) / 2, atol=0.01)


def test_rgb_samples_use_the_coupling():
  """With alpha_(1,0) -> 1 and sharp scales, green follows red."""
  p = lm.params_per_component(3)
  params = jnp.zeros((1, p)).at[0, 4:7].set(-7.0).at[0, 1].set(0.0).at[0, 7].set(20.0)
  out = jnp.broadcast_to(params, (4, 1, 1, 1, p))
  out = out.at[:, 0, 0, 0, 1].set(jnp.array([-0.8, -0.2, 0.3, 0.9]))
  x = likelihoods.sample(jax.random.split(jax.random.key(0), 4), out, "logistic_mixture")
  np.testing.assert_allclose(x[:, 0, 0, 1], x[:, 0, 0, 0], atol=2 / 255)
  np.testing.assert_allclose(x[:, 0, 0, 2], 0.5, atol=2 / 255)


def test_layout_and_shape_helpers():
  assert [lm.params_per_component(c) for c in (1, 2, 3)] == [3, 6, 10]
  assert [lm.channels_of(p) for p in (3, 6, 10)] == [1, 2, 3]
  assert likelihoods.decoder_shape((32, 32, 3), "logistic_mixture", 10) == (32, 32, 10, 10)
  assert likelihoods.decoder_shape((28, 28, 1), "bernoulli", 10) == (28, 28, 1)
  with pytest.raises(ValueError):
    lm.channels_of(4)
