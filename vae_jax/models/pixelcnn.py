"""Gated PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN decoders").

An autoregressive model of a grid of discrete codes in raster order: the logits at position
(i, j) depend only on the codes above row i and left of column j in row i. Each gated layer has
two stacks. The vertical stack sees the rows above and the current row through a
(k//2 + 1) x k convolution (the k x k masked kernel without its zero rows); the horizontal stack
sees the current row up to column j through a 1 x (k//2 + 1) convolution. The vertical features
reach the horizontal stack only shifted down by one row, so they carry rows < i, and the full
width of the vertical kernel grows the receptive field to the right as well as the left: the
blind spot of the original PixelCNN's masked 3x3 kernels is gone. The first layer shifts the
horizontal input right by one (the paper's mask 'A': the current code is not seen) and has no
residual connection; later layers (mask 'B') see their own position, which by then carries
only earlier codes. Both stacks use the gated activation tanh(a) * sigmoid(b).

With `num_classes` > 0 the model is class-conditional, as in the paper: each layer adds a learned
per-class bias (V^T h with h the one-hot label) to the pre-activations of both stacks, so the
logits model p(c | y) and stay causal in c.

With `dropout` > 0 each layer drops units of its horizontal residual branch (as PixelCNN++ does
in its residual blocks) when the call is given per-example keys, i.e. in training; without keys
(evaluation, sampling) the model is deterministic.

"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def down_shift(x: jax.Array) -> jax.Array:
  """[batch, H, W, C] moved down one row: row i holds row i - 1, row 0 zeros."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: jax.Array) -> jax.Array:
  """[batch, H, W, C] moved right one column: column j holds column j - 1, column 0 zeros."""
  return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def example_dropout(x: jax.Array, keys: jax.Array, rate: float) -> jax.Array:
  """Inverted dropout of x [batch, ...] with example i's mask drawn from keys[i].

  Each kept unit is scaled by 1 / (1 - rate), so the expectation is x. An example's mask does not
  depend on the rest of the batch.
  """
  keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x.shape[1:]))(keys)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def gate(x: jax.Array) -> jax.Array:
  """tanh(a) * sigmoid(b) of the two halves a, b of the channels [..., 2C] -> [..., C]."""
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nn.Module):
  """One gated layer: (vertical, horizontal) features [batch, H, W, C] in, the same out.

  Attributes:
    features: C, the channels of both stacks.
    kernel_size: k (odd); the vertical kernel is (k//2 + 1) x k, the horizontal 1 x (k//2 + 1).
    first: mask 'A' (the first layer): the horizontal stack does not see its own position and
      there is no residual connection.
    dropout: the rate at which the gated horizontal features are dropped when keys are given.
  """

  features: int
  kernel_size: int = 3
  first: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(
    self,
    v: jax.Array,
    h: jax.Array,
    keys: jax.Array | None = None,
    cond: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array]:
    """One layer; `keys` (one per example, already this layer's) switch dropout on.

    `cond` [batch, N] (e.g. one-hot labels) adds a learned bias to both stacks' pre-activations.
    """
    c, k, r = self.features, self.kernel_size, self.kernel_size // 2
    v_feat = nn.Conv(2 * c, (r + 1, k), padding=((r, 0), (r, r)), name="vertical")(v)
    h_in = right_shift(h) if self.first else h
    h_feat = nn.Conv(2 * c, (1, r + 1), padding=((0, 0), (r, 0)), name="horizontal")(h_in)
    h_feat = h_feat + nn.Dense(2 * c, name="vertical_to_horizontal")(down_shift(v_feat))
    if cond is not None:
      v_feat = v_feat + nn.Dense(2 * c, use_bias=False, name="cond_vertical")(cond)[:, None, None]
      h_feat = h_feat + nn.Dense(2 * c, use_bias=False, name="cond_horizontal")(cond)[:, None, None]
    h_gated = gate(h_feat)
    if keys is not None and self.dropout > 0:
      h_gated = example_dropout(h_gated, keys, self.dropout)
    h_out = nn.Dense(c, name="horizontal_out")(h_gated)
    return gate(v_feat), h_out if self.first else h + h_out


class GatedStack(nn.Module):
  """Gated layers and an output head: embedded grid [batch, H, W, C] -> logits [batch, H, W, K].

  Attributes:
    num_codes: K, the categories per position.
    features: C, the channels of the stacks (the input's last axis must match).
    num_layers: gated layers (>= 1).
    kernel_size: k of every layer (odd).
    head_features: width of the hidden 1x1 layer of the output head.
    dropout: each layer's dropout rate (`GatedLayer`), applied only when keys are given.
  """

  num_codes: int
  features: int = 64
  num_layers: int = 8
  kernel_size: int = 3
  head_features: int = 256
  dropout: float = 0.0

  @nn.compact
  def __call__(
    self, e: jax.Array, keys: jax.Array | None = None, cond: jax.Array | None = None
  ) -> jax.Array:
    """Logits of embedded grids; `keys` [batch] switch dropout on (layer i folds in i).

    `cond` [batch, N] conditions every layer (`GatedLayer`).
    """
    v = h = e
    for i in range(self.num_layers):
      layer = GatedLayer(
        self.features, self.kernel_size, first=i == 0, dropout=self.dropout, name=f"layer_{i}"
      )
      layer_keys = None if keys is None else jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
      v, h = layer(v, h, layer_keys, cond)
    out = nn.Dense(self.head_features, name="head_hidden")(nn.relu(h))
    return nn.Dense(self.num_codes, name="head_logits")(nn.relu(out))


class GatedPixelCNN(nn.Module):
  """Code indices [batch, H, W] -> logits [batch, H, W, K]: a learned embedding, then the stack.

  Attributes: those of `GatedStack`, the embedding has `features` dimensions; and
    num_classes: > 0 makes the model class-conditional: its calls take labels y [batch] in
      [0, num_classes), whose one-hot vectors condition every layer.
  """

  num_codes: int
  features: int = 64
  num_layers: int = 8
  kernel_size: int = 3
  head_features: int = 256
  dropout: float = 0.0
  num_classes: int = 0

  @nn.compact
  def __call__(
    self, codes: jax.Array, keys: jax.Array | None = None, y: jax.Array | None = None
  ) -> jax.Array:
    """Logits of code grids; `keys` (one per example) switch dropout on; `y`: labels [batch].

    Raises:
      ValueError: labels given to an unconditional model or missing for a conditional one.
    """
    if (y is not None) != (self.num_classes > 0):
      raise ValueError(f"labels y must be given exactly when num_classes > 0 ({self.num_classes}).")
    cond = None if y is None else jax.nn.one_hot(y, self.num_classes)
    e = nn.Embed(self.num_codes, self.features, name="embed")(codes)
    stack = GatedStack(
      self.num_codes,
      self.features,
      self.num_layers,
      self.kernel_size,
      self.head_features,
      self.dropout,
      name="stack",
    )
    return stack(e, keys, cond)


def code_nll(logits: jax.Array, codes: jax.Array) -> jax.Array:
  """-log softmax(logits)[code] at each position: logits [..., K], codes [...] -> [...] nats."""
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_p, codes[..., None], axis=-1)[..., 0]


def sample_codes(
  logits_fn, rng: jax.Array, num: int, grid: tuple[int, int], temperature: jax.Array | float
) -> jax.Array:
  """Draws `num` code grids [num, H, W] one position at a time in raster order.

  Position t = i * W + j is drawn from softmax(logits_fn(codes)[:, i, j] / temperature) with key
  fold_in(rng, t), given the codes drawn before it (later positions are still 0, and a causal
  `logits_fn` does not read them). Temperature 0 takes the most likely code.

  Args:
    logits_fn: code grids [num, H, W] int32 -> logits [num, H, W, K], causal in raster order.
    rng: the key of the whole draw.
    num: grids to draw.
    grid: (H, W).
    temperature: >= 0; may be traced.
  """
  h, w = grid

  def body(t, codes):
    i, j = t // w, t % w
    logits = logits_fn(codes)[:, i, j]
    scaled = logits / jnp.maximum(temperature, jnp.finfo(logits.dtype).tiny)
    drawn = jax.random.categorical(jax.random.fold_in(rng, t), scaled, axis=-1)
    pick = jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1))
    return codes.at[:, i, j].set(pick.astype(codes.dtype))

  return lax.fori_loop(0, h * w, body, jnp.zeros((num, h, w), jnp.int32))
