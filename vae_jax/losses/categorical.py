"""Categorical latents: Gumbel sampling, the KL to a uniform prior, the annealed temperature.

Arrays of logits are [..., K] (one categorical of K classes per trailing vector). The relaxed
one-hot sample of Jang et al. (2017) and Maddison et al. (2017) is
y = softmax((logits + g) / tau) with g ~ Gumbel(0, 1); argmax(logits + g) is an exact sample of
the categorical softmax(logits) (the Gumbel-max trick), so y tends to that one-hot as tau -> 0.
"""

import math

import jax
import jax.numpy as jnp


def gumbel_noise(keys: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """g ~ Gumbel(0, 1) of `shape` for each example, from that example's key: [batch, *shape]."""
  return jax.vmap(lambda k: jax.random.gumbel(k, shape).astype(dtype))(keys)


def relaxed_one_hot(perturbed: jax.Array, temperature) -> jax.Array:
  """softmax(perturbed / temperature) over the last axis, for perturbed = logits + g."""
  return jax.nn.softmax(perturbed / temperature, axis=-1)


def straight_through(soft: jax.Array) -> jax.Array:
  """one_hot(argmax(soft)) in the forward pass, the gradient of `soft` in the backward pass."""
  hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


def log_prob(logits: jax.Array, classes: jax.Array) -> jax.Array:
  """log softmax(logits)[class] for integer `classes` [...] (one per trailing vector of logits)."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_q, classes[..., None], axis=-1)[..., 0]


def kl_uniform(logits: jax.Array) -> jax.Array:
  """KL(softmax(logits) || Uniform(K)) = sum_k q_k log(q_k K), one value per vector: [...].

  In [0, log K]: 0 for uniform logits, log K for a one-hot q.
  """
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + math.log(logits.shape[-1])


def annealed_temperature(step, initial, minimum, rate, every=1) -> jax.Array:
  """tau_t = max(minimum, initial * exp(-rate * t)), t = step rounded down to a multiple of `every`.

  Jang et al. (2017) update tau every N steps ('every'); every=1 anneals at each step. Takes Python
  numbers or traced scalars and returns a float32 scalar.
  """
  step = jnp.asarray(step, jnp.int32)
  t = (step // every * every).astype(jnp.float32)
  return jnp.maximum(minimum, initial * jnp.exp(-rate * t)).astype(jnp.float32)
