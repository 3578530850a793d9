"""How much the KL term weighs at a given step: warm-up, cyclical annealing, capacity.

All functions take the step (and the config's numeric fields) as Python numbers or traced scalars
and return a float32 scalar, so the same code serves the jitted train step, host-side logging and
vectorized sweeps whose members differ in these fields.
"""

import jax.numpy as jnp
import ml_collections

KL_SCHEDULES = ("constant", "linear", "cyclical")


def kl_weight(step, config: ml_collections.ConfigDict) -> jnp.ndarray:
  """Multiplier in [0, 1] on beta.

  constant: 1. linear: rises from 0 to 1 over `kl_warmup_steps`. cyclical (Fu et al. 2019): the
  run is cut into cycles of `kl_cycle_steps`; in each, the weight rises linearly from 0 to 1 over
  the first `kl_cycle_ratio` of the cycle and then stays at 1.
  """
  step = jnp.asarray(step, jnp.float32)
  if config.kl_schedule == "constant":
    return jnp.ones((), jnp.float32)
  if config.kl_schedule == "linear":
    return jnp.clip(step / jnp.maximum(config.kl_warmup_steps, 1), 0.0, 1.0)
  if config.kl_schedule == "cyclical":
    phase = jnp.mod(step, config.kl_cycle_steps) / config.kl_cycle_steps
    return jnp.clip(phase / config.kl_cycle_ratio, 0.0, 1.0)
  raise ValueError(f"Unknown kl_schedule {config.kl_schedule!r}; choose one of {KL_SCHEDULES}.")


def capacity(step, config: ml_collections.ConfigDict) -> jnp.ndarray:
  """Target KL C in nats (Burgess et al. 2018): 0 rising linearly to `capacity_max`."""
  step = jnp.asarray(step, jnp.float32)
  return config.capacity_max * jnp.clip(step / jnp.maximum(config.capacity_steps, 1), 0.0, 1.0)
