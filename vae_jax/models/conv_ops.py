"""Stride-2 convolutions as stride-1 ones, for XLA's CPU backend.

XLA:CPU runs a stride-2 convolution's forward pass well, but its gradients badly: the input
gradient becomes a convolution over a zero-dilated cotangent and the kernel gradient one with a
dilated window, both several times slower than a plain stride-1 convolution of the same size.
Here the stride-2 convolution is rewritten before autodiff sees it ("space-to-depth" or phase
decomposition): the padded input's 2x2 pixel blocks become channels, [B, 2H', 2W', C] ->
[B, H', W', 4C], and the k x k kernel becomes a ceil(k/2) x ceil(k/2) kernel over those 4C channels
(taps past k are zero), so forward and both gradients are stride-1 convolutions. Same function
and parameters as `lax.conv_general_dilated`; equal up to float rounding.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (the `conv_general_dilated`
field of `flax.linen.Conv`): stride-2 NHWC/HWIO convolutions take the stride-1 form, anything else
goes to lax unchanged. `upconv_phase_conv` is the same idea for the transposed convolution of
`models.upconv.UpConv`: each output phase is a ceil(k/2)-wide stride-1 convolution.

Which formulation runs is chosen when the model is traced (`use_fast_path`): the stride-1 forms on
the CPU backend, XLA's own convolutions elsewhere (GPU/TPU convolution libraries handle strides).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "phase", "xla")
_NHWC = ("NHWC", "HWIO", "NHWC")


def use_fast_path(impl: str) -> bool:
  """Whether `impl` ('auto', 'phase' or 'xla') means the stride-1 forms; 'auto': on CPU only."""
  if impl not in IMPLS:
    raise ValueError(f"Unknown conv implementation {impl!r}; choose one of {IMPLS}.")
  return impl == "phase" or (impl == "auto" and jax.default_backend() == "cpu")


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _explicit_pads(padding, spatial: Sequence[int], kernel: Sequence[int]) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return [(0, 0)] * len(spatial)
    if padding.upper() != "SAME":
      raise ValueError(f"Unsupported padding {padding!r}.")
    return [_same_pads(s, k, 2) for s, k in zip(spatial, kernel, strict=True)]
  return [tuple(p) for p in padding]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride1(x: jax.Array, w: jax.Array, padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """Stride-1 NHWC/HWIO convolution whose gradients are forward-style NHWC convolutions too.

  XLA:CPU compiles the kernel gradient that autodiff derives (a convolution contracting batch and
  space) into a slow loop for some padded shapes (~50x slower than the forward pass); here it is
  one convolution of the transposed input [C, H, W, B] with the cotangent as a [H', W', B, F]
  kernel, and the input gradient one convolution of the cotangent with the flipped kernel.

  Args:
    x: input [B, H, W, C].
    w: kernel [kh, kw, C, F].
    padding: ((top, bottom), (left, right)), each between 0 and the kernel size - 1.

  Returns:
    [B, H + top + bottom - kh + 1, W + left + right - kw + 1, F].
  """
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)


def _conv_stride1_fwd(x, w, padding):
  return conv_stride1(x, w, padding), (x, w)


def _conv_stride1_bwd(padding, residuals, g):
  x, w = residuals
  (kh, kw) = w.shape[:2]
  (top, bottom), (left, right) = padding
  back = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
  w_t = jnp.flip(w, (0, 1)).swapaxes(2, 3)
  dx = lax.conv_general_dilated(g, w_t, (1, 1), back, dimension_numbers=_NHWC)
  x_t = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))).transpose(3, 1, 2, 0)
  g_t = g.transpose(1, 2, 0, 3)
  dw = lax.conv_general_dilated(x_t, g_t, (1, 1), "VALID", dimension_numbers=_NHWC)
  return dx, dw.transpose(1, 2, 0, 3)


conv_stride1.defvjp(_conv_stride1_fwd, _conv_stride1_bwd)


def stride2_conv(x: jax.Array, w: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
  """`lax.conv_general_dilated(x, w, (2, 2), padding)` in NHWC/HWIO, as one stride-1 convolution.

  Args:
    x: input [B, H, W, C].
    w: kernel [kh, kw, C, F] (square or not).
    padding: explicit ((top, bottom), (left, right)) zero padding, each >= 0.

  Returns:
    [B, H', W', F] with H' = (H + top + bottom - kh) // 2 + 1 (and W' alike).
  """
  (kh, kw), (b, h, wd, c) = w.shape[:2], x.shape
  mh, mw = -(-kh // 2), -(-kw // 2)
  (top, bottom), (left, right) = padding
  oh, ow = (h + top + bottom - kh) // 2 + 1, (wd + left + right - kw) // 2 + 1
  hp, wp = 2 * (oh + mh - 1), 2 * (ow + mw - 1)
  # Pad (or crop: rows past the last window are never read) to exactly 2 (out + m - 1) pixels.
  x = lax.pad(
    x,
    jnp.zeros((), x.dtype),
    ((0, 0, 0), (top, hp - h - top, 0), (left, wp - wd - left, 0), (0, 0, 0)),
  )
  x = x.reshape(b, hp // 2, 2, wp // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(b, hp // 2, wp // 2, 4 * c)
  w = jnp.pad(w, ((0, 2 * mh - kh), (0, 2 * mw - kw), (0, 0), (0, 0)))
  w = w.reshape(mh, 2, mw, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(mh, mw, 4 * c, -1)
  return conv_stride1(x, w, ((0, 0), (0, 0)))


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  precision=None,
  **kwargs,
) -> jax.Array:
  """`lax.conv_general_dilated`, with 2-D stride-2 NHWC/HWIO convolutions as `stride2_conv`.

  The stride-1 form ignores `precision` (float32 on CPU computes at full precision either way).
  """
  plain = lambda: lax.conv_general_dilated(  # noqa: E731
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    precision=precision,
    **kwargs,
  )
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  if (
    lhs.ndim != 4
    or tuple(window_strides) != (2, 2)
    or not undilated
    or feature_group_count != 1
    or kwargs
    or numbers != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  ):
    return plain()
  pads = _explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2])
  if any(p < 0 for pair in pads for p in pair):
    return plain()
  return stride2_conv(lhs, rhs, pads)


def _phase_windows(kernel_size: int, pad_before: int) -> tuple[int, list[tuple[int, list]]]:
  """Per output parity a: (first input offset, kernel taps over an m-wide window), m = ceil(k/2).

  Output 2i + a of the transposed convolution receives x[i + (a + pad_before - t) / 2] * w[t] for
  each tap t of the same parity as a + pad_before.
  """
  m = -(-kernel_size // 2)
  windows = []
  for a in (0, 1):
    taps = [t for t in range(kernel_size) if (a + pad_before - t) % 2 == 0]
    offsets = {(a + pad_before - t) // 2: t for t in taps}
    first = min(offsets)
    windows.append((first, [offsets.get(first + j) for j in range(m)]))
  return m, windows


# Below this many output channels UpConv multiplies the input by every tap at once instead: XLA:CPU
# runs a convolution with only 4F outputs at a few GFLOP/s (the decoder's image layer, F = 1).
_FEW_FEATURES = 8


def upconv_phase_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """The stride-2 transposed convolution of `UpConv` (no bias), [B, H, W, C] -> [B, 2H, 2W, F].

  One stride-1 convolution with an m x m window (m = ceil(k/2)) and 4F output channels, one group
  of F per output phase (a, c); each phase reads the result at its own offset, then the four are
  interleaved. The (2m - 1)^2 / m^2 -fold work of a shared window over all phases is avoided.
  With F < 8: one matmul [B H W, C] x [C, k k F] and, per phase, a sum of its taps' shifted slices.
  """
  k, f = w.shape[0], w.shape[-1]
  m, windows = _phase_windows(k, (k - 2) // 2)
  lo = min(first for first, _ in windows)
  pad = (-lo, max(first for first, _ in windows) + m - 1)
  b, h, wd, c = x.shape
  if f < _FEW_FEATURES:
    taps = (x.reshape(-1, c) @ w.transpose(2, 0, 1, 3).reshape(c, -1)).reshape(b, h, wd, k, k, f)
    taps = jnp.pad(taps, ((0, 0), pad, pad, (0, 0), (0, 0), (0, 0)))

    def phase(a: int, c_: int) -> jax.Array:
      (fa, rows), (fc, cols) = windows[a], windows[c_]
      parts = [
        taps[:, fa + i - lo : fa + i - lo + h, fc + j - lo : fc + j - lo + wd, r, t]
        for i, r in enumerate(rows)
        for j, t in enumerate(cols)
        if r is not None and t is not None
      ]
      return sum(parts[1:], parts[0])

  else:
    zero = jnp.zeros_like(w[0, 0])
    kernel = jnp.concatenate(  # [m, m, C, 4F], phase (a, c) at group 2a + c
      [
        jnp.stack(
          [jnp.stack([zero if r is None or t is None else w[r, t] for t in cs]) for r in rs]
        )
        for _, rs in windows
        for _, cs in windows
      ],
      axis=-1,
    )
    y = conv_stride1(x, kernel, (pad, pad))

    def phase(a: int, c_: int) -> jax.Array:
      fa, fc, g = windows[a][0] - lo, windows[c_][0] - lo, 2 * a + c_
      return y[:, fa : fa + h, fc : fc + wd, g * f : (g + 1) * f]

  out = jnp.stack([jnp.stack([phase(a, c_) for c_ in (0, 1)], axis=3) for a in (0, 1)], axis=2)
  return out.reshape(b, 2 * h, 2 * wd, f)  # out was [B, H, 2, W, 2, F]
