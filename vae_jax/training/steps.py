"""Pure, jitted, data-parallel train and eval steps.

`make_train_step` returns `(state, batch, rng) -> (state, metrics)`: the per-device code computes
gradients on its shard of the global batch, averages them with `lax.pmean` over the data axis and
applies the optimizer; `jax.shard_map` maps it over the mesh and `jax.jit` compiles it with the
state donated.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from vae_jax.collectives import LOCAL
from vae_jax.data.preprocess import preprocess
from vae_jax.losses import elbo
from vae_jax.models import Model, ModelOutput
from vae_jax.training import compile_options, precision
from vae_jax.training import mesh as meshes
from vae_jax.training.keys import batch_key, index_keys, sample_keys, split_example_keys, step_keys
from vae_jax.training.mesh import DATA_AXIS, DATA_COLLECTIVES, DispatchWindow, batch_sharded
from vae_jax.training.state import TrainState, model_state_of, variables


def model_inputs(batch: dict, keys: jax.Array, data: ml_collections.ConfigDict):
  """(x, y, posterior-noise keys) of a batch: images preprocessed as `config.data` says."""
  data_keys, eps_keys = split_example_keys(keys)
  x = preprocess(batch["image"], data_keys, data.binarize, data.binarize_threshold)
  return x, batch.get("label"), eps_keys


def forward_terms(
  model: Model,
  params,
  batch: dict,
  keys: jax.Array,
  config: ml_collections.ConfigDict,
  model_state: dict | None = None,
  mutable: bool = False,
  step=None,
  compute_dtype: jnp.dtype | None = None,
):
  """Preprocesses a batch, runs the model and returns the per-example objective terms.

  With `objective.num_samples` k > 1 the model runs on k posterior samples per example and the
  terms are combined by `elbo.importance_weighted_terms`: averaged over the samples (the k-sample
  ELBO of `estimator='elbo'`) and with the k-sample bound `iwae` (`estimator='iwae'`). A model
  with `capabilities.takes_step` gets `step` (the training step; None outside training). With a
  `compute_dtype` other than float32 the model runs in it and its outputs return to float32
  (`training.precision`).

  Returns:
    `(terms, outputs)`, or `((terms, outputs), updated model_state)` when `mutable`.
  """
  model_state = model_state or {}
  x, y, eps_keys = model_inputs(batch, keys, config.data)
  model_vars = variables(params, model_state)
  collections = [c for c in model.capabilities.mutable if c in model_state] if mutable else False
  m = config.model
  step_arg = {"step": step} if model.capabilities.takes_step else {}
  apply = precision.in_dtype(model.apply, compute_dtype)

  def one_sample(k):
    return apply(model_vars, x, k, y, mutable=collections, **step_arg)

  if config.objective.estimator == "iwae" or config.objective.num_samples > 1:
    ids = jnp.arange(config.objective.num_samples)
    result = jax.vmap(one_sample)(sample_keys(eps_keys, ids))
    outputs, new_state = result if mutable else (result, None)
    sample_terms = jax.vmap(
      lambda o: o.terms(x, m.likelihood, m.gaussian_sigma, with_log_weight=True)
    )(outputs)
    terms = elbo.importance_weighted_terms(sample_terms)
    outputs = jax.tree.map(lambda v: v[0], outputs)
    new_state = jax.tree.map(lambda v: v.mean(axis=0), new_state)
  else:
    result = one_sample(eps_keys)
    outputs, new_state = result if mutable else (result, None)
    terms = outputs.terms(x, m.likelihood, m.gaussian_sigma)
  if mutable:
    return (terms, outputs), new_state
  return terms, outputs


def importance_log_weights(
  model: Model,
  model_vars: dict,
  batch: dict,
  keys: jax.Array,
  config: ml_collections.ConfigDict,
  sample_ids: jax.Array,
) -> jax.Array:
  """log p(x|z_s) + log p(z_s) - log q(z_s|x) for posterior samples `sample_ids`, [k, batch].

  Sample s of an example uses fold_in(eps_key, s), so the weights do not depend on how the samples
  are chunked. Binarization uses the example's data key, the same for every sample.
  """
  x, y, eps_keys = model_inputs(batch, keys, config.data)
  m = config.model

  def one_sample(k):
    outputs = model.apply(model_vars, x, k, y)
    return outputs.terms(x, m.likelihood, m.gaussian_sigma, with_log_weight=True)["log_weight"]

  return jax.vmap(one_sample)(sample_keys(eps_keys, sample_ids))


def _batch_loss(
  model: Model, model_vars, outputs: ModelOutput, rng, mask=None, mutable=False, collectives=None
):
  """The model's `batch_loss` (over the data axis by default); `mutable` lists what it updates."""
  collectives = collectives or DATA_COLLECTIVES
  return model.apply(
    model_vars, outputs, collectives, rng, mask, method=model.batch_loss, mutable=mutable
  )


def update(
  model: Model,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  state: TrainState,
  batch: dict,
  keys: jax.Array,
  rng_batch: jax.Array,
  sharded: bool = True,
) -> tuple[TrainState, dict]:
  """One optimizer step of per-device code inside `shard_map` over `DATA_AXIS`.

  Computes gradients on this device's shard, averages them (and the metrics and mutable model
  state) with `lax.pmean`, and applies the optimizer. Pure in all its arguments, so a sweep can
  `vmap` it over members whose `config` holds traced hyperparameters. With `sharded=False` the
  whole batch is on one device and there is nothing to average (no `shard_map` around it).
  """
  collectives = DATA_COLLECTIVES if sharded else LOCAL
  grad_norm = config.get("log_grad_norm", True)

  def loss_fn(params):
    (terms, outputs), model_state = forward_terms(
      model,
      params,
      batch,
      keys,
      config,
      state.model_state,
      mutable=True,
      step=state.step,
      compute_dtype=precision.compute_dtype(config),
    )
    loss, metrics = elbo.loss_from_terms(terms, config.objective, state.step, collectives)
    if model.capabilities.batch_loss:
      # batch_loss sees the forward pass's state updates and may update the state further.
      (extra, extra_metrics), model_state = _batch_loss(
        model,
        variables(params, model_state),
        outputs,
        rng_batch,
        mutable=list(model_state),
        collectives=collectives,
      )
      loss = loss + extra
      metrics = {**metrics, **extra_metrics, "loss": loss}
    return loss, (metrics, model_state)

  if not sharded:
    grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    return _apply(tx, state, grads, metrics, model_state, grad_norm)
  # Parameters are replicated (device-invariant); differentiating them directly would make JAX
  # psum the per-device gradients itself. Casting to device-varying gives each device the
  # gradient of its own shard's loss, which the explicit pmean then averages.
  local_params = lax.pcast(state.params, DATA_AXIS, to="varying")
  grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(local_params)
  grads = lax.pmean(grads, DATA_AXIS)
  metrics = lax.pmean(metrics, DATA_AXIS)
  model_state = lax.pmean(model_state, DATA_AXIS)
  return _apply(tx, state, grads, metrics, model_state, grad_norm)


def _apply(
  tx, state: TrainState, grads, metrics: dict, model_state, grad_norm: bool = True
) -> tuple[TrainState, dict]:
  """The optimizer's update of `state` with averaged `grads`; with `grad_norm`, its metric too."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if grad_norm:
    metrics["grad_norm"] = optax.global_norm(grads)
  new_state = state.replace(
    step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
  )
  return new_state, metrics


def pass_batch(arrays: dict, inputs: dict) -> dict:
  """The `assemble` of the host path: the inputs are the batch (`arrays` is {})."""
  del arrays
  return inputs


def global_step(
  model: Model,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  assemble: Callable[[dict, dict], dict] = pass_batch,
) -> Callable[[TrainState, dict, dict, jax.Array], tuple[TrainState, dict]]:
  """The unjitted train step `(state, arrays, inputs, rng) -> (state, metrics)`.

  Keys for the step, then `update` over the mesh with `shard_map`. Each device assembles its shard
  of the global batch from its shard of `inputs` and the replicated `arrays` (see `training.feed`;
  with the default `assemble`, `inputs` is the batch itself and `arrays` is {}).
  """

  def per_device(state, arrays, inputs, keys, rng_batch, sharded=True):
    return update(model, tx, config, state, assemble(arrays, inputs), keys, rng_batch, sharded)

  if mesh.size == 1:  # One device: no shard_map, so no all-reduce over a single participant.

    def one_device_step(state: TrainState, arrays: dict, inputs: dict, rng: jax.Array):
      size = jax.tree.leaves(inputs)[0].shape[0]
      keys, rng_batch = step_keys(rng, state.step, size)
      return per_device(state, arrays, inputs, keys, rng_batch, sharded=False)

    return one_device_step

  sharded = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P()),
    out_specs=(P(), P()),
  )

  def one_step(state: TrainState, arrays: dict, inputs: dict, rng: jax.Array):
    size = jax.tree.leaves(inputs)[0].shape[0]
    keys, rng_batch = step_keys(rng, state.step, size)
    return sharded(state, arrays, inputs, keys, rng_batch)

  return one_step


def make_train_step(
  model: Model, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Builds the jitted data-parallel train step `(state, batch, rng) -> (state, metrics)`.

  Args:
    model: the model.
    tx: the optax optimizer.
    config: the run config (objective, data and model fields are read).
    mesh: mesh with a `DATA_AXIS` axis; the global batch is split over it.

  Returns:
    `train_step(state, batch, rng)`. `rng` is the run's training key; example i of the batch uses
    fold_in(fold_in(rng, state.step), i); a model's `batch_loss` gets `keys.batch_key`.
  """
  one_step = global_step(model, tx, config, mesh)
  return jax.jit(
    lambda state, batch, rng: one_step(state, {}, batch, rng),
    donate_argnums=(0,),
    compiler_options=compile_options.step_options(),
  )


def make_dispatch_steps(
  model: Model,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  assemble: Callable[[dict, dict], dict] = pass_batch,
) -> tuple[Callable, Callable]:
  """The training loop's two programs: one step, and several steps in one compiled loop.

  Both take `(state, arrays, inputs, rng, sums)` and return `(state, sums, loss)`: `inputs` are
  one step's (for the first) or several steps' stacked on a leading axis (for the second, a
  `lax.scan` whose length is known when it compiles: no host round trip per step); each step's
  batch is `assemble(arrays, inputs)` (see `global_step`), each step's keys come from its own
  `state.step`, so both give the same numbers; `sums`, the running metric sums (see
  `zero_metrics`), gain the steps' metrics on the device, and `loss` is the last step's loss.
  """
  one_step = global_step(model, tx, config, mesh, assemble)

  def scan_body(arrays, rng):
    def body(carry, step_inputs):
      state, sums = carry
      state, metrics = one_step(state, arrays, step_inputs, rng)
      return (state, jax.tree.map(jnp.add, sums, metrics)), metrics["loss"]

    return body

  def single(state, arrays, inputs, rng, sums):
    (state, sums), loss = scan_body(arrays, rng)((state, sums), inputs)
    return state, sums, loss

  def multi(state, arrays, inputs, rng, sums):
    (state, sums), losses = lax.scan(scan_body(arrays, rng), (state, sums), inputs)
    return state, sums, losses[-1]

  options = dict(donate_argnums=(0, 4), compiler_options=compile_options.step_options())
  return jax.jit(single, **options), jax.jit(multi, **options)


def zero_metrics(one_step: Callable, state, arrays, inputs, rng, sharding) -> dict:
  """Zeros in the structure of one step's metrics, placed with `sharding` (a metric sum's start)."""
  shapes = jax.eval_shape(one_step, state, arrays, inputs, rng)[1]
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)
  return meshes.put(zeros, sharding)


def make_eval_step(
  model: Model, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[Any, dict, jax.Array], dict]:
  """Builds the jitted data-parallel eval step `(variables, batch, rng) -> sums`.

  The batch carries `index` (position in the test split; example keys are fold_in(rng, index), so
  every evaluation sees the same noise) and `mask`. Returned metrics are masked sums of the
  per-example terms plus `count`; divide by the total count after the last batch. A model with a
  batch loss adds its value (and metrics) on each eval batch, weighted by the batch's real count,
  under `batch_loss` (and the metrics' names).
  """

  def per_device(model_vars, batch: dict, keys: jax.Array, rng_batch: jax.Array):
    terms, outputs = forward_terms(
      model, model_vars["params"], batch, keys, config, model_state_of(model_vars)
    )
    mask = batch["mask"]
    sums = jax.tree.map(lambda v: jnp.tensordot(mask, v, axes=1), terms)
    sums["count"] = mask.sum()
    sums = lax.psum(sums, DATA_AXIS)
    if model.capabilities.batch_loss:
      loss, metrics = _batch_loss(model, model_vars, outputs, rng_batch, mask)
      # Global-batch values, equal on every device; pmean makes that known to shard_map.
      weighted = lax.pmean({"batch_loss": loss, **metrics}, DATA_AXIS)
      sums |= {k: v * sums["count"] for k, v in weighted.items()}
    return sums

  sharded = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P()), out_specs=P()
  )

  @functools.partial(jax.jit, compiler_options=compile_options.step_options())
  def eval_step(model_vars, batch: dict, rng: jax.Array):
    rng_batch = batch_key(rng, batch["index"][0])
    return sharded(model_vars, batch, index_keys(rng, batch["index"]), rng_batch)

  return eval_step


def sum_eval_batches(eval_step, model_vars: dict, batches, mesh: Mesh, rng: jax.Array) -> dict:
  """Runs `eval_step` over `batches` and returns the summed terms (with `count`) on the host."""
  sharding = batch_sharded(mesh)
  totals, window = None, DispatchWindow()
  for batch in batches:
    sums = eval_step(model_vars, meshes.put(batch, sharding), rng)
    window.add(sums["count"])
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return meshes.fetch(totals)
