"""Optimizer and learning-rate schedule from `config.optimizer`."""

from collections.abc import Callable

import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
DISCRIMINATOR = "discriminator"


def learning_rate_schedule(
  config: ml_collections.ConfigDict, total_steps: int
) -> Callable[[int], float]:
  """Optional linear warm-up from 0, then constant or cosine decay to 0 at `total_steps`."""
  lr, warmup = config.learning_rate, config.warmup_steps
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
  if config.schedule != "constant":
    raise ValueError(f"Unknown optimizer.schedule {config.schedule!r}; choose one of {SCHEDULES}.")
  if not warmup:
    return optax.constant_schedule(lr)
  return optax.join_schedules(
    [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
  )


def make_optimizer(
  config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
  """Returns (optimizer, learning-rate schedule); clipping by global norm when configured.

  With `discriminator_learning_rate > 0` the top-level `params['discriminator']` get their own Adam
  (constant rate, `discriminator_b1`/`_b2`, no clipping) and the rest the optimizer above.
  """
  schedule = learning_rate_schedule(config, total_steps)
  if config.name == "adam":
    opt = optax.adam(schedule)
  elif config.name == "adamw":
    opt = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:
    raise ValueError(f"Unknown optimizer.name {config.name!r}; choose one of {OPTIMIZERS}.")
  if config.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  if config.get("discriminator_learning_rate", 0.0) > 0:
    discriminator = optax.adam(
      config.discriminator_learning_rate, b1=config.discriminator_b1, b2=config.discriminator_b2
    )
    opt = optax.multi_transform({"model": opt, DISCRIMINATOR: discriminator}, param_groups)
  return opt, schedule


def param_groups(params: dict) -> dict:
  """Optimizer group of each top-level params subtree: its own for a discriminator (FactorVAE)."""
  return {k: DISCRIMINATOR if k == DISCRIMINATOR else "model" for k in params}
