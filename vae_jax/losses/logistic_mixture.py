"""Discretized mixture of logistics for 8-bit images (Salimans et al. 2017, PixelCNN++).

Each pixel's C channels get a mixture of K logistics with the channels coupled as in PixelCNN++:
within a component, channel c's location is mu_c + sum_{j<c} alpha_cj x_j, linear in the pixel's
earlier channels (tanh-squashed coefficients), so p(x) = sum_k pi_k prod_c p_k(x_c | x_<c) is a
proper joint pmf over the 256^C colours of a pixel. For C = 1 there are no coefficients.

Values: images arrive as k / 255 in [0, 1] (k = 0..255, `data.preprocess`) and are rescaled to
v = 2k/255 - 1 in [-1, 1], so bin k is [v - 1/255, v + 1/255]; bin 0 extends to -inf and bin 255
to +inf (log sigmoid and log(1 - sigmoid) of the inner edge). The middle bins use the exact identity
log(sigmoid(a) - sigmoid(b)) = -softplus(-a) - softplus(b) + log(-expm1(b - a)) for a > b, which
does not underflow where the cdf difference does, so PixelCNN++'s log-pdf approximation of a bin
(log pdf(v) + log(2/255)) is never needed; it agrees with it where the bin is narrow (tested).

Because the likelihood is a pmf over the 256 values, -log p(x) in nats divided by D ln 2 is the
bits/dim of the 8-bit data directly: no -log(1/256) offset (that offset converts a density on
[0, 256) or [0, 1] into bits of the discretized data, which this already is).

Decoder output layout: [batch, H, W, K, P] with P = 1 + 2C + C(C-1)/2 per component:
(mixture logit, C locations, C log-scales, C(C-1)/2 coupling coefficients in the order
(1,0), (2,0), (2,1), ...). K and C are read off the shape.
"""

import math

import jax
import jax.numpy as jnp

MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor on the log-scale (scale >= 9e-4, bins are 7.8e-3 wide).
_HALF_BIN = 1.0 / 255.0


def params_per_component(channels: int) -> int:
  """P: numbers per mixture component for a pixel of `channels` channels."""
  return 1 + 2 * channels + channels * (channels - 1) // 2


def channels_of(params_per: int) -> int:
  """C for a component of `params_per` numbers (the inverse of `params_per_component`)."""
  for c in range(1, 64):
    if params_per_component(c) == params_per:
      return c
  raise ValueError(f"{params_per} numbers per component fit no channel count.")


def output_shape(image_shape, num_mixtures: int) -> tuple[int, ...]:
  """The decoder output shape (H, W, K, P) for images of `image_shape` (H, W, C)."""
  h, w, c = image_shape
  return (h, w, num_mixtures, params_per_component(c))


def _split(params: jax.Array):
  """(log pi [.., K], loc [.., K, C], log_scale [.., K, C], coeffs [.., K, C(C-1)/2])."""
  c = channels_of(params.shape[-1])
  log_pi = jax.nn.log_softmax(params[..., 0], axis=-1)
  loc = params[..., 1 : 1 + c]
  log_scale = jnp.maximum(params[..., 1 + c : 1 + 2 * c], MIN_LOG_SCALE)
  coeffs = jnp.tanh(params[..., 1 + 2 * c :])
  return log_pi, loc, log_scale, coeffs


def _coupled(loc: jax.Array, coeffs: jax.Array, v: jax.Array) -> jax.Array:
  """Locations with the coupling applied: loc_c + sum_{j<c} alpha_cj v_j (v broadcasts to loc)."""
  c = loc.shape[-1]
  out, i = [loc[..., 0]], 0
  for ch in range(1, c):
    shift = sum(coeffs[..., i + j] * v[..., j] for j in range(ch))
    out.append(loc[..., ch] + shift)
    i += ch
  return jnp.stack(jnp.broadcast_arrays(*out), axis=-1)


def _log_bin(v: jax.Array, k: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
  """log P(bin k) of a logistic(loc, exp(log_scale)) discretized to 256 bins; v = 2k/255 - 1."""
  inv = jnp.exp(-log_scale)
  upper = inv * (v - loc + _HALF_BIN)
  lower = inv * (v - loc - _HALF_BIN)
  # lower < upper always; -expm1(lower - upper) = 1 - exp(-2 inv / 255) > 0.
  middle = -jax.nn.softplus(-upper) - jax.nn.softplus(lower) + jnp.log(-jnp.expm1(lower - upper))
  first = -jax.nn.softplus(-upper)  # log sigmoid(upper): bin 0 takes (-inf, upper edge].
  last = -jax.nn.softplus(lower)  # log(1 - sigmoid(lower)): bin 255 takes [lower edge, inf).
  return jnp.where(k == 0, first, jnp.where(k == 255, last, middle))


def log_prob_per_pixel(x: jax.Array, params: jax.Array) -> jax.Array:
  """log p(pixel) [batch, H, W] for images x [batch, H, W, C] of values k/255 in [0, 1]."""
  k = jnp.round(x * 255.0)
  v = (2.0 * k / 255.0 - 1.0)[..., None, :]  # [.., 1, C], broadcast over components.
  log_pi, loc, log_scale, coeffs = _split(params)
  loc = _coupled(loc, coeffs, v)
  log_bins = _log_bin(v, k[..., None, :], loc, log_scale).sum(axis=-1)  # [.., K]
  return jax.nn.logsumexp(log_pi + log_bins, axis=-1)


def log_likelihood(x: jax.Array, params: jax.Array) -> jax.Array:
  """log p(x|z) [batch] summed over pixels."""
  lp = log_prob_per_pixel(x, params)
  return lp.reshape(lp.shape[0], -1).sum(axis=-1)


def sample(key: jax.Array, params: jax.Array) -> jax.Array:
  """One draw x ~ p(x|z) in [0, 1] on the k/255 grid, of shape params.shape[:-2] + (C,).

  A component per pixel (Gumbel-max over the logits), then the channels in order by inverse-cdf
  logistic noise, each location coupled to the already-drawn (discretized) earlier channels.
  """
  log_pi, loc, log_scale, coeffs = _split(params)
  c = loc.shape[-1]
  k_key, u_key = jax.random.split(key)
  comp = jax.random.categorical(k_key, log_pi, axis=-1)[..., None]  # [..., 1]
  loc, log_scale, coeffs = (
    jnp.take_along_axis(a, comp[..., None], axis=-2)[..., 0, :] for a in (loc, log_scale, coeffs)
  )
  u = jax.random.uniform(u_key, loc.shape, minval=1e-5, maxval=1.0 - 1e-5)
  noise = jnp.exp(log_scale) * (jnp.log(u) - jnp.log1p(-u))
  drawn, i = [], 0
  for ch in range(c):
    shift = sum(coeffs[..., i + j] * drawn[j] for j in range(ch))
    i += ch
    value = jnp.clip(loc[..., ch] + shift + noise[..., ch], -1.0, 1.0)
    drawn.append(2.0 * jnp.round((value + 1.0) * 127.5) / 255.0 - 1.0)
  return (jnp.stack(drawn, axis=-1) + 1.0) / 2.0


def mean(params: jax.Array) -> jax.Array:
  """The mean image [.., C] in [0, 1] of the continuous mixture (before discretizing), clipped.

  Per component, E[x_c] = loc_c + sum_{j<c} alpha_cj E[x_j]; the mixture mean weighs these by pi.
  Discretization and the clipping of the edge bins move the exact pmf mean by less than a bin
  except where much mass lies beyond [-1, 1]: this is the image the tools show, not a likelihood.
  """
  log_pi, loc, _, coeffs = _split(params)
  c = loc.shape[-1]
  means, i = [], 0
  for ch in range(c):
    means.append(loc[..., ch] + sum(coeffs[..., i + j] * means[j] for j in range(ch)))
    i += ch
  m = (jnp.exp(log_pi)[..., None] * jnp.stack(means, axis=-1)).sum(axis=-2)
  return jnp.clip((m + 1.0) / 2.0, 0.0, 1.0)


def log_pdf_bin_approximation(v: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
  """PixelCNN++'s fallback for a middle bin: log pdf(v) + log(2/255) (for tests and comparison)."""
  t = (v - loc) * jnp.exp(-log_scale)
  return t - log_scale - 2.0 * jax.nn.softplus(t) + math.log(2.0 / 255.0)
