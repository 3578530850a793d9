"""Small CNN classifiers whose penultimate layer is the feature space of the sample-quality metrics.

`FeatureNet(heads=(10,))` is a digit classifier for 28x28 images (two 3x3 conv layers of 32 and 64
channels, each followed by 2x2 max pooling, a 128-unit dense layer, one softmax head); with
`heads=(3, 6, 40, 32, 32)` and a third conv layer it predicts each dSprites factor as a class.
`features` is the ReLU output of the dense layer. Training is plain Adam on the summed
cross-entropies of the heads, with every key derived from one seed by `fold_in`.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

# fold_in tags of the training key.
INIT, SHUFFLE = 0, 1
EVAL_BATCH = 500


class FeatureNet(nn.Module):
  """Images [batch, H, W, C] in [0, 1] -> one logits array [batch, classes] per head.

  Attributes:
    heads: classes of each head (one head for labels, one per factor for dSprites).
    conv_features: channels of the 3x3 conv layers, each followed by 2x2 max pooling.
    dense: width of the penultimate (feature) layer.
  """

  heads: tuple[int, ...]
  conv_features: tuple[int, ...] = (32, 64)
  dense: int = 128

  def setup(self):  # noqa: D102
    self.convs = [nn.Conv(f, (3, 3)) for f in self.conv_features]
    self.hidden = nn.Dense(self.dense)
    self.outputs = [nn.Dense(k) for k in self.heads]

  def features(self, x: jax.Array) -> jax.Array:
    """The penultimate activations [batch, dense]."""
    for conv in self.convs:
      x = nn.max_pool(nn.relu(conv(x)), (2, 2), (2, 2))
    return nn.relu(self.hidden(x.reshape(x.shape[0], -1)))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:  # noqa: D102
    h = self.features(x)
    return tuple(out(h) for out in self.outputs)


def init(net: FeatureNet, rng: jax.Array, image_shape: tuple[int, ...]) -> dict:
  """Initial parameters from fold_in(rng, INIT)."""
  return net.init(jax.random.fold_in(rng, INIT), jnp.zeros((1, *image_shape)))


def _loss(net: FeatureNet, params: dict, x: jax.Array, targets: jax.Array) -> jax.Array:
  logits = net.apply(params, x)
  losses = [
    optax.softmax_cross_entropy_with_integer_labels(lg, targets[:, i]).mean()
    for i, lg in enumerate(logits)
  ]
  return sum(losses)


def train(
  net: FeatureNet,
  images: np.ndarray,
  targets: np.ndarray,
  epochs: int,
  rng: jax.Array,
  batch_size: int = 128,
  learning_rate: float = 1e-3,
  log: Callable[[str], None] | None = None,
) -> dict:
  """Parameters after `epochs` passes over the data in shuffled batches (the last partial dropped).

  Args:
    net: the network.
    images: uint8 images [n, H, W, C].
    targets: int class of each head [n, len(net.heads)].
    epochs: passes over the data; epoch e is shuffled by fold_in(fold_in(rng, SHUFFLE), e).
    rng: the training key.
    batch_size: examples per Adam step.
    learning_rate: Adam's step size.
    log: called with a line after each epoch.
  """
  tx = optax.adam(learning_rate)
  params = init(net, rng, images.shape[1:])
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(functools.partial(_loss, net))(
      params, x.astype(jnp.float32) / 255.0, y
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  n = len(images) // batch_size * batch_size
  for epoch in range(epochs):
    key = jax.random.fold_in(jax.random.fold_in(rng, SHUFFLE), epoch)
    order = np.asarray(jax.random.permutation(key, len(images)))
    losses = []
    for start in range(0, n, batch_size):
      idx = np.sort(order[start : start + batch_size])
      params, opt_state, loss = step(params, opt_state, images[idx], targets[idx])
      losses.append(loss)
    if log:
      log(f"epoch {epoch + 1}/{epochs}: train loss {float(np.mean(jax.device_get(losses))):.4f}")
  return params


@functools.partial(jax.jit, static_argnums=(0,))
def _features(net: FeatureNet, params: dict, x: jax.Array) -> jax.Array:
  return net.apply(params, x, method=net.features)


@functools.partial(jax.jit, static_argnums=(0,))
def _predictions(net: FeatureNet, params: dict, x: jax.Array) -> jax.Array:
  return jnp.stack([lg.argmax(-1) for lg in net.apply(params, x)], axis=-1)


def batched(fn: Callable, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
  """`fn` over x in batches of `batch` (the last one padded, so that `fn` compiles once)."""
  parts = []
  for start in range(0, len(x), batch):
    chunk = x[start : start + batch]
    keep = len(chunk)
    if keep < batch:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - keep, axis=0)])
    parts.append(np.asarray(fn(jnp.asarray(chunk, jnp.float32)))[:keep])
  return np.concatenate(parts)


def features(net: FeatureNet, params: dict, x: np.ndarray) -> np.ndarray:
  """Penultimate activations [n, dense] of float images x in [0, 1]."""
  return batched(functools.partial(_features, net, params), x)


def accuracies(
  net: FeatureNet, params: dict, images: np.ndarray, targets: np.ndarray
) -> np.ndarray:
  """Share of correct classes per head [len(heads)] on uint8 `images`."""
  predicted = batched(functools.partial(_predictions, net, params), images / np.float32(255.0))
  return (predicted == targets).mean(axis=0)
