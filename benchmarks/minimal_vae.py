"""A minimal fused JAX training loop of an MLP VAE: the floor a framework is measured against.

The same math as vae_jax's MLP VAE (Gaussian posterior, one reparameterised sample per example,
Bernoulli likelihood, Adam) written directly in JAX: no model classes, no metrics, no shard_map,
the training images on the device and `steps` steps in one compiled `lax.scan` whose batches are
sliced from a fixed permutation. Used by `benchmarks.iwae_protocol` (the IWAE paper's protocol)
and `benchmarks.mnist_throughput.run_minimal` (`configs/mnist_mlp.py`).
"""

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def _dense(key, fan_in, fan_out):
  return {
    "w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in),
    "b": jnp.zeros(fan_out),
  }


def minimal_loop(
  images: np.ndarray,
  steps: int,
  hidden: Sequence[int],
  latent: int,
  batch: int,
  activation: str = "tanh",
  k: int = 1,
  binarize: bool = True,
  adam_eps: float = 1e-8,
  learning_rate: float = 1e-3,
) -> tuple[Callable, tuple]:
  """A jitted `(state, start) -> state` running `steps` training steps, and the first state.

  Args:
    images: uint8 training images [N, ...].
    steps: steps per call (one `lax.scan`).
    hidden: the encoder's hidden sizes (the decoder mirrors them).
    latent: the latent dimension.
    batch: examples per step.
    activation: 'tanh' or 'relu'.
    k: posterior samples per example (their ELBOs are averaged).
    binarize: fresh Bernoulli draws of the grey levels each step (else grey-level targets).
    adam_eps: Adam's epsilon.
    learning_rate: Adam's (constant) learning rate.
  """
  pixels = int(np.prod(images.shape[1:]))
  enc = [pixels, *hidden]
  sizes = [*zip(enc[:-1], enc[1:], strict=True), (enc[-1], 2 * latent)]
  dec = [latent, *reversed(hidden), pixels]
  sizes += list(zip(dec[:-1], dec[1:], strict=True))
  keys = jax.random.split(jax.random.key(0), len(sizes))
  params = [_dense(kk, i, o) for kk, (i, o) in zip(keys, sizes, strict=True)]
  tx = optax.adam(learning_rate, eps=adam_eps)
  data = jax.device_put(images.reshape(len(images), -1))
  perm = jax.device_put(np.random.default_rng(0).permutation(len(images)).astype(np.int32))
  act, depth = ACTIVATIONS[activation], len(hidden) + 1

  def mlp(layers, h):
    for i, layer in enumerate(layers):
      h = h @ layer["w"] + layer["b"]
      if i < len(layers) - 1:
        h = act(h)
    return h

  def loss(params, x, keys):
    mu, logvar = jnp.split(mlp(params[:depth], x), 2, axis=-1)
    eps = jax.vmap(lambda kk: jax.random.normal(kk, (k, latent)))(keys)
    z = mu[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps
    logits = mlp(params[depth:], z)
    recon = jnp.sum(
      x[:, None] * jax.nn.log_sigmoid(logits) + (1 - x[:, None]) * jax.nn.log_sigmoid(-logits), -1
    )
    kl = 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar, -1)
    return -jnp.mean(jnp.mean(recon, 1) - kl)

  def step(carry, i):
    params, opt_state, rng = carry
    idx = jax.lax.dynamic_slice(perm, ((i * batch) % (len(images) - batch),), (batch,))
    keys = jax.random.split(jax.random.fold_in(rng, i), batch)
    x = data[idx] / 255.0
    if binarize:
      x = jax.vmap(lambda kk, v: jax.random.bernoulli(kk, v).astype(jnp.float32))(keys, x)
    grads = jax.grad(loss)(params, x, keys)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, rng), None

  @jax.jit
  def run(state, start):
    return jax.lax.scan(step, state, start + jnp.arange(steps))[0]

  return run, (params, tx.init(params), jax.random.key(1))
