"""Encoder and decoder bodies shared by every model family.

An encoder body maps images (and an optional conditioning vector) to features; a decoder body maps a
latent vector (and the optional conditioning vector) to per-pixel outputs of `output_shape`: the
image's shape, or (H, W, K, P) when the likelihood has several numbers per pixel
(`likelihoods.decoder_shape`). The heads that turn features into distribution parameters live in
the model files.

Every layer takes `init_scheme`: 'flax' (LeCun-normal kernels, zero biases) or 'pytorch' (kernels
and biases uniform in +-1/sqrt(fan_in), PyTorch's default), to reproduce PyTorch baselines. The
conv bodies take `conv_impl` ('auto', 'phase', 'xla'; see `conv_ops`): how their stride-2 and
transposed convolutions are computed, the same function and parameters either way; 'auto' (the
default) picks the stride-1 'phase' forms on the CPU backend and XLA's convolutions elsewhere.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.losses import likelihoods
from vae_jax.models import conv_ops
from vae_jax.models.upconv import UpConv

INITS = ("flax", "pytorch")
ARCHS = ("mlp", "conv", "resnet")
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _init_kwargs(init: str, fan_in: int) -> dict:
  if init == "pytorch":
    return {
      "kernel_init": _uniform(1 / math.sqrt(fan_in)),
      "bias_init": _uniform(1 / math.sqrt(fan_in)),
    }
  return {}


def dense(features: int, x: jnp.ndarray, init: str, name: str | None = None) -> nn.Dense:
  """An `nn.Dense` for input `x` with the chosen initialisation."""
  return nn.Dense(features, name=name, **_init_kwargs(init, x.shape[-1]))


def _down(features: int, kernel_size: int, x: jnp.ndarray, init: str, impl: str) -> nn.Conv:
  """Stride-2 'SAME' convolution: halves height and width (`impl`: see `conv_ops.IMPLS`)."""
  kwargs = _init_kwargs(init, x.shape[-1] * kernel_size**2)
  if conv_ops.use_fast_path(impl):
    kwargs["conv_general_dilated"] = conv_ops.conv_general_dilated
  return nn.Conv(features, (kernel_size, kernel_size), strides=(2, 2), padding="SAME", **kwargs)


def _up(features: int, kernel_size: int, x: jnp.ndarray, init: str, impl: str) -> UpConv:
  """Stride-2 transposed convolution (the adjoint of `_down`): doubles height and width."""
  kwargs = _init_kwargs(init, x.shape[-1] * kernel_size**2)
  return UpConv(features, kernel_size, impl=impl, **kwargs)


def _join(h: jnp.ndarray, cond: jnp.ndarray | None) -> jnp.ndarray:
  return h if cond is None else jnp.concatenate([h, cond.astype(h.dtype)], axis=-1)


class Head(nn.Module):
  """A dense output layer (posterior parameters, codes) with the chosen initialisation."""

  features: int
  init_scheme: str = "flax"

  @nn.compact
  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    """Returns [batch, features]."""
    return dense(self.features, h, self.init_scheme, name="Dense_0")(h)


class MLPEncoder(nn.Module):
  """Flattens the image and applies Dense layers with `activation` ('relu' or 'tanh')."""

  hidden_sizes: Sequence[int]
  init_scheme: str = "flax"
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns features [batch, hidden_sizes[-1]]."""
    h = _join(x.reshape(x.shape[0], -1), cond)
    for size in self.hidden_sizes:
      h = ACTIVATIONS[self.activation](dense(size, h, self.init_scheme)(h))
    return h


class MLPDecoder(nn.Module):
  """Dense layers (the encoder's sizes reversed) with `activation`, then one output per pixel."""

  hidden_sizes: Sequence[int]
  output_shape: Sequence[int]
  init_scheme: str = "flax"
  activation: str = "relu"

  @nn.compact
  def __call__(self, z: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns per-pixel outputs [batch, *output_shape]."""
    h = _join(z, cond)
    for size in reversed(self.hidden_sizes):
      h = ACTIVATIONS[self.activation](dense(size, h, self.init_scheme)(h))
    out = dense(math.prod(self.output_shape), h, self.init_scheme)(h)
    return out.reshape((z.shape[0], *self.output_shape))


class ConvEncoder(nn.Module):
  """Stride-2 convolutions, then Dense+ReLU layers; the condition joins the first dense input."""

  features: Sequence[int]
  kernel_size: int
  dense_sizes: Sequence[int]
  init_scheme: str = "flax"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns features [batch, dense_sizes[-1]]."""
    h = x
    for f in self.features:
      h = nn.relu(_down(f, self.kernel_size, h, self.init_scheme, self.conv_impl)(h))
    h = _join(h.reshape(h.shape[0], -1), cond)
    for size in self.dense_sizes:
      h = nn.relu(dense(size, h, self.init_scheme)(h))
    return h


def _dense_to_grid(decoder: nn.Module, h: jnp.ndarray) -> jnp.ndarray:
  """A conv decoder's opening: `dense_sizes` reversed (ReLU), then a linear map to the grid.

  The grid is the deepest feature map, `output_shape` divided by 2 ** len(features); the Dense
  layers are created in `decoder`'s compact scope, so their names are the decoder's own.
  """
  height, width = decoder.output_shape[:2]
  scale = 2 ** len(decoder.features)
  start = (height // scale, width // scale, decoder.features[-1])
  for size in reversed(decoder.dense_sizes):
    h = nn.relu(dense(size, h, decoder.init_scheme)(h))
  return dense(math.prod(start), h, decoder.init_scheme)(h).reshape((h.shape[0], *start))


class ConvDecoder(nn.Module):
  """Mirror of `ConvEncoder`: dense layers, reshape, stride-2 transposed convolutions."""

  features: Sequence[int]
  kernel_size: int
  dense_sizes: Sequence[int]
  output_shape: Sequence[int]
  init_scheme: str = "flax"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns per-pixel outputs [batch, *output_shape]."""
    h = nn.relu(_dense_to_grid(self, _join(z, cond)))
    for f in reversed(self.features[:-1]):
      h = nn.relu(_up(f, self.kernel_size, h, self.init_scheme, self.conv_impl)(h))
    return _to_output(_up, h, self.kernel_size, self.output_shape, self.init_scheme, self.conv_impl)


def _to_output(
  layer, h: jnp.ndarray, kernel_size: int, output_shape, init: str, *impl
) -> jnp.ndarray:
  """The last layer (`_up` or `_conv`) with prod(output_shape[2:]) channels, reshaped to it."""
  out = layer(math.prod(output_shape[2:]), kernel_size, h, init, *impl)(h)
  return out.reshape((h.shape[0], *out.shape[1:3], *output_shape[2:]))


def _conv(features: int, kernel_size: int, x: jnp.ndarray, init: str) -> nn.Conv:
  """Stride-1 'SAME' convolution: keeps height and width."""
  kwargs = _init_kwargs(init, x.shape[-1] * kernel_size**2)
  return nn.Conv(features, (kernel_size, kernel_size), padding="SAME", **kwargs)


class SpatialConvEncoder(nn.Module):
  """Stride-2 convolutions, then a linear 1x1 convolution: a grid of feature vectors.

  For models with one latent vector per image position (e.g. VQ-VAE): no dense layers.
  """

  features: Sequence[int]
  kernel_size: int
  out_features: int
  init_scheme: str = "flax"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Returns [batch, H / 2^n, W / 2^n, out_features] for n = len(features)."""
    h = x
    for f in self.features:
      h = nn.relu(_down(f, self.kernel_size, h, self.init_scheme, self.conv_impl)(h))
    return _conv(self.out_features, 1, h, self.init_scheme)(h)


class SpatialConvDecoder(nn.Module):
  """Mirror of `SpatialConvEncoder`: a convolution, then stride-2 transposed convolutions."""

  features: Sequence[int]
  kernel_size: int
  output_shape: Sequence[int]
  init_scheme: str = "flax"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    """Maps a latent grid [batch, H / 2^n, W / 2^n, d] to per-pixel outputs [batch, H, W, C]."""
    h = nn.relu(_conv(self.features[-1], self.kernel_size, z, self.init_scheme)(z))
    for f in reversed(self.features[:-1]):
      h = nn.relu(_up(f, self.kernel_size, h, self.init_scheme, self.conv_impl)(h))
    return _to_output(_up, h, self.kernel_size, self.output_shape, self.init_scheme, self.conv_impl)


class ResBlock(nn.Module):
  """Pre-activation residual block (He et al. 2016): h + conv3x3(relu(conv3x3(relu(h)))).

  The second convolution starts at zero, so each block starts as the identity and a deep stack
  trains without normalization layers (no batch statistics to carry or synchronize).
  """

  init_scheme: str = "flax"

  @nn.compact
  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    """Returns [batch, H, W, C] for h of that shape."""
    f = h.shape[-1]
    r = _conv(f, 3, h, self.init_scheme)(nn.relu(h))
    r = nn.Conv(f, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros_init())(nn.relu(r))
    return h + r


class ResNetEncoder(nn.Module):
  """Stages of (stride-2 convolution to `features[i]`, `blocks` residual blocks), then dense.

  A 3x3 stem convolution to `features[0]` comes first; the condition joins the first dense input.
  """

  features: Sequence[int]
  kernel_size: int
  blocks: int
  dense_sizes: Sequence[int]
  init_scheme: str = "flax"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns features [batch, dense_sizes[-1]] (the flattened last stage if dense_sizes=())."""
    h = _conv(self.features[0], 3, x, self.init_scheme)(x)
    for f in self.features:
      h = _down(f, self.kernel_size, h, self.init_scheme, self.conv_impl)(h)
      for _ in range(self.blocks):
        h = ResBlock(self.init_scheme)(h)
    h = _join(nn.relu(h).reshape(h.shape[0], -1), cond)
    for size in self.dense_sizes:
      h = nn.relu(dense(size, h, self.init_scheme)(h))
    return h


class ResNetDecoder(nn.Module):
  """Mirror of `ResNetEncoder`: dense, reshape, stages of (residual blocks, `UpConv` upsampling).

  Stage i (from the deepest) runs `blocks` residual blocks at `features[i]` and upsamples to
  `features[i - 1]` (`features[0]` last); a ReLU and a 3x3 convolution give the outputs.
  """

  features: Sequence[int]
  kernel_size: int
  blocks: int
  dense_sizes: Sequence[int]
  output_shape: Sequence[int]
  init_scheme: str = "flax"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z: jnp.ndarray, cond: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns per-pixel outputs [batch, *output_shape]."""
    h = _dense_to_grid(self, _join(z, cond))
    widths = (self.features[0], *self.features[:-1])
    for i in reversed(range(len(self.features))):
      for _ in range(self.blocks):
        h = ResBlock(self.init_scheme)(h)
      h = _up(widths[i], self.kernel_size, h, self.init_scheme, self.conv_impl)(nn.relu(h))
    return _to_output(_conv, nn.relu(h), 3, self.output_shape, self.init_scheme)


def build_bodies(
  config: ml_collections.ConfigDict, image_shape: Sequence[int]
) -> tuple[nn.Module, nn.Module]:
  """The (encoder, decoder) bodies named by `config.arch` (`config` is `config.model`).

  The decoder's output shape follows `config.likelihood` (`likelihoods.decoder_shape`).
  """
  out_shape = decoder_output_shape(config, image_shape)
  if config.arch == "mlp":
    act = config.get("activation", "relu")
    return (
      MLPEncoder(tuple(config.hidden_sizes), config.init_scheme, act),
      MLPDecoder(tuple(config.hidden_sizes), out_shape, config.init_scheme, act),
    )
  conv = dict(
    features=tuple(config.conv_features),
    kernel_size=config.conv_kernel_size,
    dense_sizes=tuple(config.dense_sizes),
    init_scheme=config.init_scheme,
  )
  if config.arch == "conv":
    return ConvEncoder(**conv), ConvDecoder(**conv, output_shape=out_shape)
  if config.arch == "resnet":
    blocks = config.get("res_blocks", 1)
    return (
      ResNetEncoder(**conv, blocks=blocks),
      ResNetDecoder(**conv, blocks=blocks, output_shape=out_shape),
    )
  raise ValueError(f"Unknown model.arch {config.arch!r}; choose one of {ARCHS}.")


def decoder_output_shape(config: ml_collections.ConfigDict, image_shape) -> tuple[int, ...]:
  """The per-example decoder output shape for `config.model`'s likelihood."""
  return likelihoods.decoder_shape(image_shape, config.likelihood, config.get("num_mixtures", 1))
