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

from vae_jax import compile_options, objectives
from vae_jax.data.preprocess import preprocess
from vae_jax.parallel import (
  DATA_AXIS,
  DATA_COLLECTIVES,
  DispatchWindow,
  batch_key,
  batch_sharded,
  example_keys,
  index_keys,
)


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

  step: jnp.ndarray
  params: Any
  opt_state: Any
  model_state: Any


def init_state(
  model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, image_shape, num_classes: int
) -> TrainState:
  """Initialises parameters from `rng` with a dummy batch of two examples."""
  x = jnp.zeros((2, *image_shape), jnp.float32)
  y = jnp.zeros((2,), jnp.int32) if num_classes else None
  keys = jax.random.split(rng, 2)
  variables = dict(model.init(rng, x, keys, y))
  params = variables.pop("params")
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state=variables
  )


def variables(params, model_state) -> dict:
  """The Flax variables dict of a model: `{'params': params, **model_state}`."""
  return {"params": params, **model_state}


def split_example_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each example key -> (key for binarization, key for the posterior noise)."""
  data_keys, eps_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  return data_keys, eps_keys


def sample_keys(eps_keys: jax.Array, sample_ids: jnp.ndarray) -> jax.Array:
  """Keys [k, batch] for posterior samples `sample_ids` of each example: fold_in(key, sample)."""
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
  return jax.vmap(lambda s: fold(eps_keys, s))(sample_ids)


def forward_terms(
  model: nn.Module,
  params,
  batch: dict,
  keys: jax.Array,
  config: ml_collections.ConfigDict,
  model_state: dict | None = None,
  mutable: bool = False,
):
  """Preprocesses a batch, runs the model and returns the per-example objective terms.

  With `objective.estimator='iwae'` the model runs on `objective.num_samples` posterior samples per
  example and the terms are combined by `objectives.importance_weighted_terms`.

  Returns:
    `(terms, outputs)`, or `((terms, outputs), updated model_state)` when `mutable`.
  """
  model_state = model_state or {}
  data_keys, eps_keys = split_example_keys(keys)
  x = preprocess(batch["image"], data_keys, config.data.binarize, config.data.binarize_threshold)
  y = batch.get("label")
  model_vars = variables(params, model_state)
  collections = list(model_state) if mutable else False
  terms_of = functools.partial(
    objectives.per_example_terms,
    likelihood=config.model.likelihood,
    gaussian_sigma=config.model.gaussian_sigma,
  )
  if config.objective.estimator == "iwae":
    ids = jnp.arange(config.objective.num_samples)

    def one_sample(k):
      return model.apply(model_vars, x, k, y, mutable=collections)

    result = jax.vmap(one_sample)(sample_keys(eps_keys, ids))
    outputs, new_state = result if mutable else (result, None)
    sample_terms = jax.vmap(lambda o: terms_of(x, o, with_log_weight=True))(outputs)
    terms = objectives.importance_weighted_terms(sample_terms)
    outputs = jax.tree.map(lambda v: v[0], outputs)
    new_state = jax.tree.map(lambda v: v.mean(axis=0), new_state)
  else:
    result = model.apply(model_vars, x, eps_keys, y, mutable=collections)
    outputs, new_state = result if mutable else (result, None)
    terms = terms_of(x, outputs)
  if mutable:
    return (terms, outputs), new_state
  return terms, outputs


def importance_log_weights(
  model: nn.Module,
  model_vars: dict,
  batch: dict,
  keys: jax.Array,
  config: ml_collections.ConfigDict,
  sample_ids: jnp.ndarray,
) -> jnp.ndarray:
  """log p(x|z_s) + log p(z_s) - log q(z_s|x) for posterior samples `sample_ids`, [k, batch].

  Sample s of an example uses fold_in(eps_key, s), so the weights do not depend on how the samples
  are chunked. Binarization uses the example's data key, the same for every sample.
  """
  data_keys, eps_keys = split_example_keys(keys)
  x = preprocess(batch["image"], data_keys, config.data.binarize, config.data.binarize_threshold)
  y = batch.get("label")

  def one_sample(k):
    outputs = model.apply(model_vars, x, k, y)
    terms = objectives.per_example_terms(
      x, outputs, config.model.likelihood, config.model.gaussian_sigma, with_log_weight=True
    )
    return terms["log_weight"]

  return jax.vmap(one_sample)(sample_keys(eps_keys, sample_ids))


def update(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  state: TrainState,
  batch: dict,
  keys: jax.Array,
  rng_batch: jax.Array,
) -> tuple[TrainState, dict]:
  """One optimizer step of per-device code inside `shard_map` over `DATA_AXIS`.

  Computes gradients on this device's shard, averages them (and the metrics and mutable model
  state) with `lax.pmean`, and applies the optimizer. Pure in all its arguments, so a sweep can
  `vmap` it over members whose `config` holds traced hyperparameters.
  """

  def loss_fn(params):
    (terms, outputs), model_state = forward_terms(
      model, params, batch, keys, config, state.model_state, mutable=True
    )
    loss, metrics = objectives.loss_from_terms(
      terms, config.objective, state.step, DATA_COLLECTIVES
    )
    if hasattr(model, "batch_loss"):
      # batch_loss sees the forward pass's state updates and may update the state further.
      (extra, extra_metrics), model_state = model.apply(
        variables(params, model_state),
        outputs,
        DATA_COLLECTIVES,
        rng_batch,
        method=model.batch_loss,
        mutable=list(model_state),
      )
      loss = loss + extra
      metrics = {**metrics, **extra_metrics, "loss": loss}
    return loss, (metrics, model_state)

  # Parameters are replicated (device-invariant); differentiating them directly would make JAX
  # psum the per-device gradients itself. Casting to device-varying gives each device the
  # gradient of its own shard's loss, which the explicit pmean then averages.
  local_params = lax.pcast(state.params, DATA_AXIS, to="varying")
  grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(local_params)
  grads = lax.pmean(grads, DATA_AXIS)
  metrics = lax.pmean(metrics, DATA_AXIS)
  model_state = lax.pmean(model_state, DATA_AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.global_norm(grads)
  new_state = state.replace(
    step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
  )
  return new_state, metrics


def step_keys(rng: jax.Array, step, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """Per-example keys [batch] and the batch-level key of a training step (see `parallel`)."""
  return example_keys(rng, step, jnp.arange(batch_size)), batch_key(rng, step)


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
    fold_in(fold_in(rng, state.step), i); a model's `batch_loss` gets `parallel.batch_key`.
  """
  return jax.jit(
    global_step(model, tx, config, mesh),
    donate_argnums=(0,),
    compiler_options=compile_options.step_options(),
  )


def global_step(
  model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """The unjitted train step: keys for the step, then `update` over the mesh with `shard_map`."""
  sharded = jax.shard_map(
    functools.partial(update, model, tx, config),
    mesh=mesh,
    in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P()),
    out_specs=(P(), P()),
  )

  def one_step(state: TrainState, batch: dict, rng: jax.Array):
    keys, rng_batch = step_keys(rng, state.step, batch["image"].shape[0])
    return sharded(state, batch, keys, rng_batch)

  return one_step


def make_multi_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
) -> Callable[[TrainState, dict, jax.Array, int], tuple[TrainState, dict]]:
  """Builds a jitted function that runs up to `config.steps_per_execution` steps in one dispatch.

  `multi_step(state, batches, rng, n)` takes the next K = `steps_per_execution` global batches
  stacked on a leading axis (unused trailing ones may hold anything) and runs the first `n` of them
  through the per-device `update` in an XLA while loop, so one program serves every `n <= K`.
  Each step's keys come from its own `state.step`, exactly as in `make_train_step`. Returns the
  new state and the metrics summed over the `n` steps.
  """
  one_step = global_step(model, tx, config, mesh)

  @functools.partial(jax.jit, donate_argnums=(0,), compiler_options=compile_options.step_options())
  def multi_step(state: TrainState, batches: dict, rng: jax.Array, n):
    def body(i, carry):
      state, sums = carry
      state, metrics = one_step(state, jax.tree.map(lambda b: b[i], batches), rng)
      return state, jax.tree.map(jnp.add, sums, metrics)

    first = jax.tree.map(lambda b: b[0], batches)
    shapes = jax.eval_shape(one_step, state, first, rng)[1]
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    return lax.fori_loop(0, n, body, (state, zeros))

  return multi_step


def make_eval_step(
  model: nn.Module, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[Any, dict, jax.Array], dict]:
  """Builds the jitted data-parallel eval step `(variables, batch, rng) -> sums`.

  The batch carries `index` (position in the test split; example keys are fold_in(rng, index), so
  every evaluation sees the same noise) and `mask`. Returned metrics are masked sums of the
  per-example terms plus `count`; divide by the total count after the last batch.
  """

  def per_device(model_vars, batch: dict, keys: jax.Array):
    terms, _ = forward_terms(
      model, model_vars["params"], batch, keys, config, _model_state(model_vars)
    )
    mask = batch["mask"]
    sums = jax.tree.map(lambda v: jnp.tensordot(mask, v, axes=1), terms)
    sums["count"] = mask.sum()
    return lax.psum(sums, DATA_AXIS)

  sharded = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=P()
  )

  @functools.partial(jax.jit, compiler_options=compile_options.step_options())
  def eval_step(model_vars, batch: dict, rng: jax.Array):
    return sharded(model_vars, batch, index_keys(rng, batch["index"]))

  return eval_step


def _model_state(model_vars: dict) -> dict:
  return {k: v for k, v in model_vars.items() if k != "params"}


def sum_eval_batches(eval_step, model_vars: dict, batches, mesh: Mesh, rng: jax.Array) -> dict:
  """Runs `eval_step` over `batches` and returns the summed terms (with `count`) on the host."""
  sharding = batch_sharded(mesh)
  totals, window = None, DispatchWindow()
  for batch in batches:
    sums = eval_step(model_vars, jax.device_put(batch, sharding), rng)
    window.add(sums["count"])
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return jax.device_get(totals)
