"""Pure, jitted, data-parallel train and eval steps.

`make_train_step` returns `(state, batch, rng) -> (state, metrics)`: the per-device code computes
gradients on its shard of the global batch, averages them with `lax.pmean` over the data axis and
applies the optimizer; `jax.shard_map` maps it over the mesh and `jax.jit` compiles it with the
state donated.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from vae_jax import objectives
from vae_jax.data.preprocess import preprocess
from vae_jax.parallel import DATA_AXIS, example_keys, index_keys


@flax.struct.dataclass
class TrainState:
  """Everything a training run checkpoints: step counter, parameters, optimizer state."""

  step: jnp.ndarray
  params: Any
  opt_state: Any


def init_state(
  model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, image_shape, num_classes: int
) -> TrainState:
  """Initialises parameters from `rng` with a dummy batch of two examples."""
  x = jnp.zeros((2, *image_shape), jnp.float32)
  y = jnp.zeros((2,), jnp.int32) if num_classes else None
  keys = jax.random.split(rng, 2)
  params = model.init(rng, x, keys, y)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def forward_terms(
  model: nn.Module, params, batch: dict, keys: jax.Array, config: ml_collections.ConfigDict
) -> dict[str, jnp.ndarray]:
  """Preprocesses a batch and returns the per-example objective terms.

  Each example key is split into one key for binarization and one for the posterior noise.
  """
  data_keys, eps_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  x = preprocess(batch["image"], data_keys, config.data.binarize, config.data.binarize_threshold)
  outputs = model.apply({"params": params}, x, eps_keys, batch.get("label"))
  return objectives.per_example_terms(
    x, outputs, config.model.likelihood, config.model.gaussian_sigma
  )


def make_train_step(
  model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Builds the jitted data-parallel train step.

  Args:
    model: the Flax model.
    tx: the optax optimizer.
    config: the run config (objective, data and model fields are read).
    mesh: mesh with a `DATA_AXIS` axis; the global batch is split over it.

  Returns:
    `train_step(state, batch, rng)`. `rng` is the run's training key; example i of the batch uses
    fold_in(fold_in(rng, state.step), i).
  """

  def per_device(state: TrainState, batch: dict, keys: jax.Array):
    def loss_fn(params):
      terms = forward_terms(model, params, batch, keys, config)
      return objectives.loss_from_terms(
        terms, config.objective, state.step, lambda v: lax.pmean(v, DATA_AXIS)
      )

    # Parameters are replicated (device-invariant); differentiating them directly would make JAX
    # psum the per-device gradients itself. Casting to device-varying gives each device the
    # gradient of its own shard's loss, which the explicit pmean then averages.
    local_params = lax.pcast(state.params, DATA_AXIS, to="varying")
    grads, metrics = jax.grad(loss_fn, has_aux=True)(local_params)
    grads = lax.pmean(grads, DATA_AXIS)
    metrics = lax.pmean(metrics, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  sharded = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=(P(), P())
  )

  @functools.partial(jax.jit, donate_argnums=(0,))
  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    indices = jnp.arange(batch["image"].shape[0])
    return sharded(state, batch, example_keys(rng, state.step, indices))

  return train_step


def make_eval_step(
  model: nn.Module, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[Any, dict, jax.Array], dict]:
  """Builds the jitted data-parallel eval step `(params, batch, rng) -> sums`.

  The batch carries `index` (position in the test split; example keys are fold_in(rng, index), so
  every evaluation sees the same noise) and `mask`. Returned metrics are masked sums of the
  per-example terms plus `count`; divide by the total count after the last batch.
  """

  def per_device(params, batch: dict, keys: jax.Array):
    terms = forward_terms(model, params, batch, keys, config)
    mask = batch["mask"]
    sums = jax.tree.map(lambda v: jnp.tensordot(mask, v, axes=1), terms)
    sums["count"] = mask.sum()
    return lax.psum(sums, DATA_AXIS)

  sharded = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=P()
  )

  @jax.jit
  def eval_step(params, batch: dict, rng: jax.Array):
    return sharded(params, batch, index_keys(rng, batch["index"]))

  return eval_step
