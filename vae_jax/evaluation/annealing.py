"""Annealing schedules, and chains with Hamiltonian Monte Carlo transitions, for `evaluation.ais`.

`betas(T, schedule)` is the path's beta_0 = 0 < ... < beta_T = 1: linear, or sigmoidal
(Grosse et al. 2015: sigmoid(linspace(-4, 4, T + 1)) rescaled to [0, 1]; Wu et al. 2017 use it).

`anneal(densities, z0, schedule, keys, leapfrog_steps)` runs independent chains [batch, chains]
along f_t(z) = p(z) p(x|z)^beta_t: the log weight adds (beta_t - beta_{t-1}) log p(x|z) before
each move (Neal 2001), and the move is one HMC transition (unit mass, L leapfrog steps, Metropolis
correction; Neal 2011) that leaves f_t invariant. A chain carries log p(z), log p(x|z) and both
gradients at its position, so a transition costs L evaluations of each and the next beta reuses
the last.

Step sizes: either given, one per transition and example (`step_sizes`), or adapted by each chain
after each of its transitions towards TARGET_ACCEPTANCE: log eps += ADAPT_RATE (a -
TARGET_ACCEPTANCE), a the transition's acceptance probability, eps kept in STEP_SIZE_RANGE.
Adapting makes a chain's kernels depend on its own past, which AIS's proof does not allow: on the
linear-Gaussian model of `tests/test_ais.py` (T = 1000) estimates from adapting chains came out
0.11 nats ABOVE the exact log p(x), 8 standard errors. So `anneal(..., pilots=P)` lets the first
P chains of each example adapt and gives every other chain, at each transition, the pilots'
geometric mean step size there: those chains' kernels depend on the pilots' past only, and the
pilots run in the same loop (one compiled loop, P more rows).
"""

from collections.abc import Callable
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("sigmoid", "linear")
SIGMOID_RADIUS = 4.0
TARGET_ACCEPTANCE = 0.65
ADAPT_RATE = 0.1
INITIAL_STEP_SIZE = 0.1
STEP_SIZE_RANGE = (1e-4, 1.0)


def betas(num_steps: int, schedule: str = "sigmoid") -> np.ndarray:
  """The annealing schedule beta_0 = 0 < ... < beta_T = 1, [num_steps + 1] float64."""
  if schedule == "linear":
    return np.linspace(0.0, 1.0, num_steps + 1)
  if schedule == "sigmoid":
    s = 1.0 / (1.0 + np.exp(-np.linspace(-SIGMOID_RADIUS, SIGMOID_RADIUS, num_steps + 1)))
    return (s - s[0]) / (s[-1] - s[0])
  raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")


class Densities(NamedTuple):
  """log p(z) and log p(x|z): functions of latents [batch, chains, d] to [batch, chains]."""

  log_prior: Callable[[jax.Array], jax.Array]
  log_likelihood: Callable[[jax.Array], jax.Array]


class Chains(NamedTuple):
  """What `anneal` returns.

  Attributes:
    log_weight: the chains' log AIS weights [batch, chains].
    acceptance: mean acceptance probability over the transitions [batch, chains] (1 when there
      are none).
    step_sizes: the step size of every transition [T - 1, batch, chains].
  """

  log_weight: jax.Array
  acceptance: jax.Array
  step_sizes: jax.Array


@flax.struct.dataclass
class _Point:
  """A chain's position and the densities and gradients there."""

  z: jax.Array
  log_prior: jax.Array
  grad_prior: jax.Array
  log_likelihood: jax.Array
  grad_likelihood: jax.Array

  def log_target(self, beta) -> jax.Array:
    return self.log_prior + beta * self.log_likelihood

  def grad_target(self, beta) -> jax.Array:
    return self.grad_prior + beta * self.grad_likelihood


def _value_and_grad(fn, z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-chain values and gradients (chains are independent, so the gradient of the sum)."""
  value, pullback = jax.vjp(fn, z)
  return value, pullback(jnp.ones_like(value))[0]


def _point(densities: Densities, z: jax.Array) -> _Point:
  return _Point(
    z, *_value_and_grad(densities.log_prior, z), *_value_and_grad(densities.log_likelihood, z)
  )


def fold_keys(keys: jax.Array, data) -> jax.Array:
  """fold_in(key, data) for every key of an array of keys, any shape."""
  flat = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys.reshape(-1), data)
  return flat.reshape(keys.shape)


def _draw(keys: jax.Array, sampler, shape=()) -> jax.Array:
  """One `sampler(key, shape)` per key of an array of keys: [*keys.shape, *shape]."""
  flat = jax.vmap(lambda k: sampler(k, shape))(keys.reshape(-1))
  return flat.reshape(*keys.shape, *shape)


def hmc_transition(
  densities: Densities,
  point: _Point,
  beta,
  step_size: jax.Array,
  keys: jax.Array,
  leapfrog_steps: int,
) -> tuple[_Point, jax.Array]:
  """One HMC transition of every chain, leaving p(z) p(x|z)^beta invariant.

  A chain's key draws d + 1 standard normals: the momentum, and one whose normal CDF is the
  Metropolis test's uniform (log u = log_ndtr(n), exact and stable).

  Args:
    densities: log p(z) and log p(x|z).
    point: the chains' positions [batch, chains, d] with densities and gradients there.
    beta: the target's inverse temperature.
    step_size: leapfrog step size of each chain [batch, chains].
    keys: one key per chain [batch, chains].
    leapfrog_steps: L.

  Returns:
    The new points and the acceptance probabilities [batch, chains].
  """
  d = point.z.shape[-1]
  noise = _draw(keys, jax.random.normal, (d + 1,))
  p0, log_u = noise[..., :d], jax.scipy.special.log_ndtr(noise[..., d])
  eps = step_size[..., None]
  p = p0 + 0.5 * eps * point.grad_target(beta)

  def full_step(carry, _):
    current, p = carry
    current = _point(densities, current.z + eps * p)
    return (current, p + eps * current.grad_target(beta)), None

  (last, p), _ = jax.lax.scan(full_step, (point, p), length=leapfrog_steps - 1)
  new = _point(densities, last.z + eps * p)
  p = p + 0.5 * eps * new.grad_target(beta)
  h0 = -point.log_target(beta) + 0.5 * jnp.sum(p0**2, axis=-1)
  h1 = -new.log_target(beta) + 0.5 * jnp.sum(p**2, axis=-1)
  log_accept = jnp.minimum(0.0, h0 - h1)
  log_accept = jnp.where(jnp.isnan(log_accept), -jnp.inf, log_accept)
  accepted = log_u < log_accept

  def choose(a, b):
    return jnp.where(accepted.reshape(accepted.shape + (1,) * (a.ndim - accepted.ndim)), a, b)

  return jax.tree.map(choose, new, point), jnp.exp(log_accept)


def adapt_step_size(step_size: jax.Array, acceptance: jax.Array) -> jax.Array:
  """The step size after a transition accepted with probability `acceptance`."""
  step_size = step_size * jnp.exp(ADAPT_RATE * (acceptance - TARGET_ACCEPTANCE))
  return jnp.clip(step_size, *STEP_SIZE_RANGE)


def _led_by_pilots(step_size: jax.Array, pilots: int) -> jax.Array:
  """Every chain gets its example's geometric mean of the first `pilots` chains' step sizes."""
  led = jnp.exp(jnp.log(step_size[:, :pilots]).mean(axis=1, keepdims=True))
  return jnp.concatenate(
    [step_size[:, :pilots], jnp.broadcast_to(led, step_size[:, pilots:].shape)], 1
  )


def anneal(
  densities: Densities,
  z0: jax.Array,
  schedule: np.ndarray,
  keys: jax.Array,
  leapfrog_steps: int,
  step_sizes: jax.Array | None = None,
  pilots: int = 0,
) -> Chains:
  """Runs AIS chains from z0 [batch, chains, d] along betas `schedule` [T + 1].

  The log weight is sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}), t = 1..T, with an HMC
  transition at beta_t after each of the first T - 1 terms. Transition t of a chain uses
  fold_in(its key, t). A schedule from 0 to 1 is forward AIS (z0 from the prior, E[w] = p(x));
  from 1 to 0 it is reverse AIS (z0 from the posterior, E[w] = 1/p(x)).

  Args:
    densities: log p(z) and log p(x|z) of latents [batch, chains, d].
    z0: the chains' starting points [batch, chains, d].
    schedule: the betas [T + 1].
    keys: the chains' keys [batch, chains].
    leapfrog_steps: L per transition.
    step_sizes: [T - 1, batch] the step size of each transition for each example's chains, fixed
      in advance as AIS's proof assumes. None: see `pilots`.
    pilots: without `step_sizes`, the first `pilots` chains of each example adapt their step
      sizes and the others take, at each transition, the pilots' geometric mean there (so their
      kernels do not depend on their own past; drop the pilots' weights); 0: every chain adapts
      its own.
  """
  schedule = jnp.asarray(schedule, z0.dtype)
  deltas = schedule[1:] - schedule[:-1]
  num_transitions = len(deltas) - 1
  zeros = jnp.zeros_like(z0[..., 0])  # Derived from z0: varying over the mesh like the chains.

  def step(carry, xs):
    point, log_w, step_size, accept_sum = carry
    t, beta, delta, fixed = xs
    if fixed is not None:
      step_size = jnp.broadcast_to(fixed[:, None], zeros.shape)
    elif pilots:
      step_size = _led_by_pilots(step_size, pilots)
    log_w = log_w + delta * point.log_likelihood
    point, accept = hmc_transition(
      densities, point, beta, step_size, fold_keys(keys, t), leapfrog_steps
    )
    carry = (point, log_w, adapt_step_size(step_size, accept), accept_sum + accept)
    return carry, step_size

  start = (_point(densities, z0), zeros, zeros + INITIAL_STEP_SIZE, zeros)
  xs = (jnp.arange(1, num_transitions + 1), schedule[1:-1], deltas[:-1], step_sizes)
  (point, log_w, _, accept_sum), used = jax.lax.scan(step, start, xs)
  log_w = log_w + deltas[-1] * point.log_likelihood
  acceptance = accept_sum / num_transitions if num_transitions else zeros + 1.0
  return Chains(log_w, acceptance, used)
