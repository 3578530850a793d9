"""The train state a run checkpoints, and how it is initialised."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vae_jax.data.spec import DataSpec
from vae_jax.models import Model
from vae_jax.training import averaging


@flax.struct.dataclass
class TrainState:
  """Everything a training run checkpoints.

  Attributes:
    step: number of optimizer steps taken.
    params: trainable parameters.
    opt_state: optimizer state.
    model_state: the model's non-trainable variable collections (e.g. EMA codebooks), by name;
      empty for most models.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any


def init_state(
  model: Model, tx: optax.GradientTransformation, rng: jax.Array, data: DataSpec
) -> TrainState:
  """Initialises parameters from `rng` with a dummy batch of two examples."""
  x = jnp.zeros((2, *data.image_shape), jnp.float32)
  y = jnp.zeros((2,), jnp.int32) if data.num_classes else None
  keys = jax.random.split(rng, 2)
  variables = dict(model.init(rng, x, keys, y))
  params = variables.pop("params")
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state=variables
  )


def variables(params, model_state) -> dict:
  """The Flax variables dict of a model: `{'params': params, **model_state}`."""
  return {"params": params, **model_state}


def eval_variables(state: TrainState) -> dict:
  """The variables evaluation and sampling use: the parameters' moving average when kept."""
  return variables(averaging.averaged_params(state.opt_state, state.params), state.model_state)


def model_state_of(model_vars: dict) -> dict:
  """The non-trainable collections of a Flax variables dict (everything but 'params')."""
  return {k: v for k, v in model_vars.items() if k != "params"}
