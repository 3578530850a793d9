"""Optimizer and learning-rate schedule from `config.optimizer`."""

from collections.abc import Callable, Mapping

import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
MAIN_GROUP = "model"  # The optimizer group of every parameter without an optimizer of its own.


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
  config: ml_collections.ConfigDict,
  total_steps: int,
  own: Mapping[str, optax.GradientTransformation] | None = None,
) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
  """Returns (optimizer, learning-rate schedule); clipping by global norm when configured.

  Args:
    config: `config.optimizer`.
    total_steps: the run's length (for decaying schedules).
    own: optimizers of their own for top-level parameter subtrees, by key (a model's
      `param_optimizers`, e.g. FactorVAE's discriminator); the rest gets the optimizer above.
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
  if own:
    groups = dict(own)

    def param_groups(params: dict) -> dict:
      return {k: k if k in groups else MAIN_GROUP for k in params}

    opt = optax.multi_transform({MAIN_GROUP: opt, **groups}, param_groups)
  return opt, schedule
