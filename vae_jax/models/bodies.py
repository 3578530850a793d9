"""Encoder and decoder bodies shared by every model family.

An encoder body maps images (and an optional conditioning vector) to features; a decoder body maps a
latent vector (and the optional conditioning vector) to per-pixel outputs of the image's shape. The
heads that turn features into distribution parameters live in the model files.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _join(h: jnp.ndarray, cond: jnp.ndarray | None) -> jnp.ndarray:
  return h if cond is None else jnp.concatenate([h, cond.astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
  """Flattens the image and applies Dense+ReLU layers."""

  hidden_sizes: Sequence[int]

  @nn.compact
  def __call__(self, x: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns features [batch, hidden_sizes[-1]]."""
    h = _join(x.reshape(x.shape[0], -1), cond)
    for size in self.hidden_sizes:
      h = nn.relu(nn.Dense(size)(h))
    return h


class MLPDecoder(nn.Module):
  """Dense+ReLU layers (the encoder's sizes reversed), then one output per pixel."""

  hidden_sizes: Sequence[int]
  output_shape: Sequence[int]

  @nn.compact
  def __call__(self, z: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns per-pixel outputs [batch, *output_shape]."""
    h = _join(z, cond)
    for size in reversed(self.hidden_sizes):
      h = nn.relu(nn.Dense(size)(h))
    out = nn.Dense(math.prod(self.output_shape))(h)
    return out.reshape((z.shape[0], *self.output_shape))


class ConvEncoder(nn.Module):
  """Stride-2 convolutions, then Dense+ReLU layers; the condition joins the first dense input."""

  features: Sequence[int]
  kernel_size: int
  dense_sizes: Sequence[int]

  @nn.compact
  def __call__(self, x: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns features [batch, dense_sizes[-1]]."""
    h = x
    k = (self.kernel_size, self.kernel_size)
    for f in self.features:
      h = nn.relu(nn.Conv(f, k, strides=(2, 2), padding="SAME")(h))
    h = _join(h.reshape(h.shape[0], -1), cond)
    for size in self.dense_sizes:
      h = nn.relu(nn.Dense(size)(h))
    return h


class ConvDecoder(nn.Module):
  """Mirror of `ConvEncoder`: dense layers, reshape, stride-2 transposed convolutions."""

  features: Sequence[int]
  kernel_size: int
  dense_sizes: Sequence[int]
  output_shape: Sequence[int]

  @nn.compact
  def __call__(self, z: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns per-pixel outputs [batch, *output_shape]."""
    height, width, channels = self.output_shape
    scale = 2 ** len(self.features)
    start = (height // scale, width // scale, self.features[-1])
    h = _join(z, cond)
    for size in reversed(self.dense_sizes):
      h = nn.relu(nn.Dense(size)(h))
    h = nn.relu(nn.Dense(start[0] * start[1] * start[2])(h)).reshape((z.shape[0], *start))
    k = (self.kernel_size, self.kernel_size)
    for f in reversed(self.features[:-1]):
      h = nn.relu(nn.ConvTranspose(f, k, strides=(2, 2), padding="SAME")(h))
    return nn.ConvTranspose(channels, k, strides=(2, 2), padding="SAME")(h)
