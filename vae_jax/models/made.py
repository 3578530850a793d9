"""MADE (Germain et al. 2015) and inverse autoregressive flow steps (Kingma et al. 2016).

A MADE maps z (and an optional context vector h) to (m, s) where output i depends only on
z_1..z_{i-1}: every layer's kernel is multiplied by a fixed 0/1 mask built from unit degrees
(inputs 1..d, hidden units cycling through 1..d-1; a connection j -> k is kept when
deg(k) >= deg(j) between hidden layers and when deg(k) > deg(j) into the outputs). The context joins
the first hidden layer unmasked: it does not depend on z.

An IAF step is the paper's numerically stable (LSTM-style) update z <- sigma * z + (1 - sigma) * m
with sigma = sigmoid(s). Its Jacobian is triangular with diagonal sigma, so
log|det| = sum log sigma.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# s is initialised near this value so each step starts close to the identity (sigma ~ 0.88), as
# the paper recommends for the gated update.
GATE_BIAS = 2.0


def made_masks(dim: int, hidden_sizes: Sequence[int]) -> list[np.ndarray]:
  """The 0/1 kernel masks [fan_in, fan_out] of each hidden layer and of the output layer."""
  in_degrees = np.arange(1, dim + 1)
  degrees = [in_degrees]
  for size in hidden_sizes:
    degrees.append(np.arange(size) % max(dim - 1, 1) + 1)
  masks = [
    (d_out[None, :] >= d_in[:, None]).astype(np.float32)
    for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True)
  ]
  masks.append((in_degrees[None, :] > degrees[-1][:, None]).astype(np.float32))
  return masks


class MaskedDense(nn.Module):
  """A dense layer whose kernel is multiplied by a fixed mask given at call time."""

  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: np.ndarray) -> jnp.ndarray:
    """Returns x @ (kernel * mask) + bias."""
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    return x @ (kernel * jnp.asarray(mask, kernel.dtype)) + bias


class MADE(nn.Module):
  """Masked autoregressive network: z [batch, d] (+ context) -> (m, s), each [batch, d].

  The output layers start at zero kernels, so a fresh MADE gives m = 0 and s = GATE_BIAS.

  Attributes:
    hidden_sizes: widths of the masked ELU hidden layers (>= d - 1 units each to connect every
      input to every later output).
  """

  hidden_sizes: Sequence[int]

  @nn.compact
  def __call__(
    self, z: jnp.ndarray, context: jnp.ndarray | None = None
  ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Returns (m, s) where output i depends only on z[..., :i] (and the context)."""
    dim = z.shape[-1]
    masks = made_masks(dim, self.hidden_sizes)
    h = z
    for i, (size, mask) in enumerate(zip(self.hidden_sizes, masks[:-1], strict=True)):
      a = MaskedDense(size, name=f"hidden_{i}")(h, mask)
      if i == 0 and context is not None:
        a = a + nn.Dense(size, use_bias=False, name="context")(context)
      h = nn.elu(a)
    zeros = nn.initializers.zeros
    m = MaskedDense(dim, kernel_init=zeros, name="m")(h, masks[-1])
    s = MaskedDense(
      dim, kernel_init=zeros, bias_init=nn.initializers.constant(GATE_BIAS), name="s"
    )(h, masks[-1])
    return m, s


class IAFFlow(nn.Module):
  """`num_steps` IAF steps; the variable order is reversed between steps and restored at the end.

  Attributes:
    num_steps: number of IAF steps K.
    hidden_sizes: each step's MADE hidden layers.
  """

  num_steps: int
  hidden_sizes: Sequence[int]

  @nn.compact
  def __call__(
    self, z: jnp.ndarray, context: jnp.ndarray | None = None
  ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Returns (z_K, log|det dz_K/dz_0|) for z_0 = `z` [batch, d]; the log-det is [batch]."""
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for k in range(self.num_steps):
      if k:
        z = z[..., ::-1]
      m, s = MADE(self.hidden_sizes, name=f"made_{k}")(z, context)
      sigma = jax.nn.sigmoid(s)
      z = sigma * z + (1.0 - sigma) * m
      log_det = log_det + jnp.sum(jax.nn.log_sigmoid(s), axis=-1)
    if self.num_steps > 1 and self.num_steps % 2 == 0:
      z = z[..., ::-1]
    return z, log_det
