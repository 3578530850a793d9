"""Stride-2 transposed convolution computed as one stride-1 convolution plus an interleave.

`UpConv(features, kernel_size)` is the adjoint (transpose) of a stride-2 'SAME' convolution with
the same kernel: out[2i + k - p] += x[i] * w[k], with p the SAME padding before the input. XLA's
CPU backend runs `nn.ConvTranspose` as a convolution over a zero-dilated input (4x the work, and a
slower backward pass); here each output phase (row parity a, column parity b) is a small stride-1
convolution over the undilated input, all four computed by one `lax.conv` with 4x the output
channels ("sub-pixel" convolution), then interleaved. Same function class and parameter shape as a
transposed convolution; several times faster to train on CPU.
"""

import itertools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from vae_jax.models import conv_ops


def _phase_taps(kernel_size: int) -> tuple[int, list[list[int | None]]]:
  """For output parities a = 0, 1: the kernel tap used at each input offset of a shared window.

  Returns:
    (first offset of the window, [taps for a=0, taps for a=1]) where taps[j] is the kernel index
    applied to input i + first + j for output 2i + a (None: no tap).
  """
  pad_before = (kernel_size - 2) // 2  # SAME padding of a stride-2 conv on an even-sized input
  offsets = {}
  for a in (0, 1):
    for k in range(kernel_size):
      if (a + pad_before - k) % 2 == 0:  # output 2i + a receives x[i + off] * w[k]
        offsets[(a, (a + pad_before - k) // 2)] = k
  first = min(off for _, off in offsets)
  width = max(off for _, off in offsets) - first + 1
  taps = [[offsets.get((a, first + j)) for j in range(width)] for a in (0, 1)]
  return first, taps


class UpConv(nn.Module):
  """Transposed convolution with stride 2: [B, H, W, Cin] -> [B, 2H, 2W, features].

  Attributes:
    features: output channels.
    kernel_size: square kernel size (the kernel parameter is [k, k, Cin, features], as in
      `nn.ConvTranspose`).
    kernel_init: initializer of the kernel.
    bias_init: initializer of the bias.
    impl: 'auto', 'phase' or 'xla' (`conv_ops.use_fast_path`): 'phase' computes each output phase
      over its own ceil(k/2)-wide window (`conv_ops.upconv_phase_conv`), 'xla' over the window
      shared by all four phases with XLA's convolution gradients; 'auto' is 'phase' on CPU.
  """

  features: int
  kernel_size: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Returns [B, 2H, 2W, features]."""
    k, cin = self.kernel_size, x.shape[-1]
    w = self.param("kernel", self.kernel_init, (k, k, cin, self.features))
    b = self.param("bias", self.bias_init, (self.features,))
    if conv_ops.use_fast_path(self.impl):
      return conv_ops.upconv_phase_conv(x, w) + b
    first, taps = _phase_taps(k)
    width = len(taps[0])
    # Gather table [width, width, 2, 2]: the flat tap (ky * k + kx) that phase (a, c) applies at
    # window cell (row, col); k * k points at an appended zero tap.
    table = np.full((width, width, 2, 2), k * k)
    for row, col, a, c in itertools.product(range(width), range(width), (0, 1), (0, 1)):
      if taps[a][row] is not None and taps[c][col] is not None:
        table[row, col, a, c] = taps[a][row] * k + taps[c][col]
    flat = jnp.concatenate([w.reshape(k * k, cin, self.features), jnp.zeros_like(w[:1, 0])])
    phase = jnp.transpose(flat[table], (0, 1, 4, 2, 3, 5)).reshape(
      width, width, cin, 4 * self.features
    )
    pad = ((-first, width - 1 + first),) * 2
    y = lax.conv_general_dilated(x, phase, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    bsz, h, wd = y.shape[:3]
    y = y.reshape(bsz, h, wd, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(bsz, 2 * h, 2 * wd, self.features) + b


def same_conv_stride2(x: np.ndarray, w: np.ndarray) -> jnp.ndarray:
  """The stride-2 'SAME' convolution whose adjoint `UpConv` computes (for tests and docs)."""
  return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
