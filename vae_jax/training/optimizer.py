"""Optimizer and learning-rate schedule from `config.optimizer`."""

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax.training import averaging

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "staged")
MAIN_GROUP = "model"  # The optimizer group of every parameter without an optimizer of its own.


def staged_schedule(
  learning_rate: float, stage_epochs, decay: float, steps_per_epoch: int
) -> Callable[[int], float]:
  """Stage i of `stage_epochs[i]` epochs runs at `learning_rate * decay**i` (Burda et al. 2015).

  The last stage's rate holds after the stages end.
  """
  starts = jnp.asarray(np.cumsum(stage_epochs)[:-1] * steps_per_epoch, jnp.int32)

  def schedule(count):
    stage = jnp.sum(jnp.asarray(count) >= starts)
    return learning_rate * jnp.asarray(decay, jnp.float32) ** stage

  return schedule


def learning_rate_schedule(
  config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int = 1
) -> Callable[[int], float]:
  """The learning rate at each step.

  'constant' or 'cosine' (to 0 at `total_steps`), both after an optional linear warm-up from 0, or
  'staged' (`staged_schedule` with `stage_epochs` and `stage_decay`, counted in epochs of
  `steps_per_epoch` steps).
  """
  lr, warmup = config.learning_rate, config.warmup_steps
  if config.schedule == "staged":
    return staged_schedule(lr, config.stage_epochs, config.stage_decay, steps_per_epoch)
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
  steps_per_epoch: int = 1,
) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
  """Returns (optimizer, learning-rate schedule); clipping by global norm when configured.

  With `ema_decay` > 0 the optimizer state also keeps a moving average of all the parameters
  (`averaging.with_params_ema`), which evaluation, summaries and the tools then use.

  Args:
    config: `config.optimizer`.
    total_steps: the run's length (for decaying schedules).
    own: optimizers of their own for top-level parameter subtrees, by key (a model's
      `param_optimizers`, e.g. FactorVAE's discriminator); the rest gets the optimizer above.
    steps_per_epoch: the length of an epoch, for schedules counted in epochs.
  """
  schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
  moments = dict(b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), eps=config.get("eps", 1e-8))
  if config.name == "adam":
    opt = optax.adam(schedule, **moments)
  elif config.name == "adamw":
    opt = optax.adamw(schedule, weight_decay=config.weight_decay, **moments)
  else:
    raise ValueError(f"Unknown optimizer.name {config.name!r}; choose one of {OPTIMIZERS}.")
  if config.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  if own:
    groups = dict(own)

    def param_groups(params: dict) -> dict:
      return {k: k if k in groups else MAIN_GROUP for k in params}

    opt = optax.multi_transform({MAIN_GROUP: opt, **groups}, param_groups)
  if config.get("ema_decay", 0.0) > 0:
    opt = averaging.with_params_ema(opt, config.ema_decay)
  return opt, schedule
