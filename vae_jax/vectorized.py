"""Vectorized sweeps: members that share array shapes train as ONE jitted program.

Members may differ only in `VECTORIZABLE` fields (seed, beta, KL schedule and capacity numbers,
learning rate, weight decay). Their train states are stacked on a leading member axis and
`steps.update` is `vmap`ped over members, with each member's differing fields passed as traced
values; `jax.shard_map` maps that over a 2-D mesh whose 'member' axis spreads members over devices
beside the 'data' axis that splits each member's batch. Each member still gets its own workdir with
config.json, Orbax checkpoints (the same TrainState a single run saves), TensorBoard events,
eval_history.jsonl and results.json, so `vae_jax.main`, `vae_jax.evaluate` and `vae_jax.tools` treat
it like any other run.
"""

import functools
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import (
  checkpointing,
  compile_options,
  config_checks,
  optim,
  parallel,
  runs,
  steps,
  summaries,
  train,
)
from vae_jax.data import Dataset, load_dataset
from vae_jax.models import build_model
from vae_jax.parallel import DATA_AXIS

MEMBER_AXIS = "member"
VECTORIZABLE = (
  "seed",
  "objective.beta",
  "objective.free_bits",
  "objective.kl_warmup_steps",
  "objective.kl_cycle_steps",
  "objective.kl_cycle_ratio",
  "objective.capacity_max",
  "objective.capacity_steps",
  "objective.capacity_gamma",
  "optimizer.learning_rate",
  "optimizer.weight_decay",
)


def member_hparams(configs: list[ml_collections.ConfigDict]) -> dict[str, np.ndarray]:
  """The traced fields: {dotted key: float32 [members]} for every vectorizable key that differs.

  Raises:
    config_checks.ConfigError: members differ in a field that changes shapes or code paths.
  """
  flats = [checkpointing.flatten_config(c) for c in configs]
  differing = sorted(k for k in flats[0] if any(f.get(k) != flats[0][k] for f in flats[1:]))
  fixed = [k for k in differing if k not in VECTORIZABLE]
  if fixed:
    raise config_checks.ConfigError(
      f"Cannot vectorize: members differ in {', '.join(fixed)}; only {', '.join(VECTORIZABLE)} "
      "may differ. Run such members with --executor=local instead."
    )
  return {k: np.asarray([f[k] for f in flats], np.float32) for k in differing if k != "seed"}


def traced_config(base: ml_collections.ConfigDict, hparams: dict) -> ml_collections.ConfigDict:
  """A copy of `base` whose `hparams` fields hold (traced) arrays instead of Python numbers."""
  config = ml_collections.ConfigDict(base.to_dict(), type_safe=False)
  for key, value in hparams.items():
    parent, field = key.rsplit(".", 1)
    config[parent][field] = value
  return config


def make_member_mesh(num_members: int, devices=None) -> Mesh:
  """A (member, data) mesh: members spread over devices when their count divides evenly."""
  devices = np.asarray(devices if devices is not None else jax.local_devices())
  member = math.gcd(num_members, devices.size)
  return Mesh(devices.reshape(member, devices.size // member), (MEMBER_AXIS, DATA_AXIS))


def make_vectorized_train_step(model, base: ml_collections.ConfigDict, total_steps: int, mesh):
  """Jitted `(states, batches, rngs, hparams) -> (states, metrics)` over stacked members."""

  def member_update(state, batch, keys, rng_batch, hparams):
    config = traced_config(base, hparams)
    tx, _ = optim.make_optimizer(config.optimizer, total_steps)
    return steps.update(model, tx, config, state, batch, keys, rng_batch)

  sharded = jax.shard_map(
    jax.vmap(member_update),
    mesh=mesh,
    in_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS, DATA_AXIS), P(MEMBER_AXIS, DATA_AXIS))
    + (P(MEMBER_AXIS), P(MEMBER_AXIS)),
    out_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS)),
  )

  @functools.partial(jax.jit, donate_argnums=(0,), compiler_options=compile_options.step_options())
  def train_step(states, batches, rngs, hparams):
    size = batches["image"].shape[1]
    keys, rng_batch = jax.vmap(lambda r, s: steps.step_keys(r, s, size))(rngs, states.step)
    return sharded(states, batches, keys, rng_batch, hparams)

  return train_step


def _stack(trees: list):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, i: int, sharding):
  return jax.device_put(jax.tree.map(lambda v: v[i], tree), sharding)


def _initial_states(model, configs, workdirs, dataset, total_steps, mesh) -> list:
  """Each member's state: restored from its checkpoint when it has one, else initialised."""
  states, resumed = [], set()
  for config, workdir in zip(configs, workdirs, strict=True):
    tx, _ = optim.make_optimizer(config.optimizer, total_steps)
    init_rng = parallel.run_keys(config.seed)["init"]
    state = jax.jit(
      lambda r, tx=tx: steps.init_state(model, tx, r, dataset.image_shape, dataset.num_classes),
      out_shardings=parallel.replicated(mesh),
    )(init_rng)
    ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
    if ckpt.latest_step() is not None:
      state = ckpt.restore(state)
    ckpt.close()
    states.append(state)
    resumed.add(int(state.step))
  if len(resumed) > 1:
    raise checkpointing.CheckpointError(
      f"Members were checkpointed at different steps {sorted(resumed)}; resume them one by one "
      "with vae_jax.main (or --executor=local)."
    )
  return states


def train_members(
  configs: list[ml_collections.ConfigDict],
  workdirs: list[str],
  *,
  devices=None,
  dataset: Dataset | None = None,
) -> list[dict]:
  """Trains all members together; writes each member's run exactly as `train_and_evaluate` does.

  Args:
    configs: one config per member; they may differ only in `VECTORIZABLE` fields.
    workdirs: one run directory per member.
    devices: devices to use (default all local ones).
    dataset: in-memory dataset shared by all members; default `load_dataset(configs[0].data)`.

  Returns:
    Each member's results (also written to its `results.json`).
  """
  devices = devices if devices is not None else jax.local_devices()
  mesh = make_member_mesh(len(configs), devices)
  eval_mesh = parallel.make_mesh(devices)
  hparams = member_hparams(configs)
  for config in configs:
    config_checks.validate(config, mesh.shape[DATA_AXIS])
    config_checks.validate(config, eval_mesh.size)
  base = configs[0]
  dataset = dataset or load_dataset(base.data)
  config_checks.validate_for_data(base, dataset.image_shape, dataset.num_classes)
  for config, workdir in zip(configs, workdirs, strict=True):
    checkpointing.save_config(config, workdir)

  streams = [dataset.train_stream(c.data.batch_size, c.seed) for c in configs]
  spe = streams[0].steps_per_epoch
  total_steps = train.num_train_steps(base, spe)
  model = build_model(base.model, dataset.image_shape, dataset.num_classes)
  rngs = [parallel.run_keys(c.seed) for c in configs]
  member_states = _initial_states(model, configs, workdirs, dataset, total_steps, eval_mesh)
  initial_step = int(member_states[0].step)
  member_sharding = NamedSharding(mesh, P(MEMBER_AXIS))
  states = jax.device_put(_stack(member_states), member_sharding)
  del member_states
  train_rngs = jax.device_put(jnp.stack([r["train"] for r in rngs]), member_sharding)
  hp = jax.device_put({k: jnp.asarray(v) for k, v in hparams.items()}, member_sharding)

  writers = [metric_writers.create_default_writer(w) for w in workdirs]
  if initial_step == 0:
    for config, writer in zip(configs, writers, strict=True):
      writer.write_hparams(checkpointing.flatten_config(config) | {"num_devices": len(devices)})
  checkpointers = [
    checkpointing.Checkpointer(w, c.keep_checkpoints)
    for c, w in zip(configs, workdirs, strict=True)
  ]
  schedules = [optim.make_optimizer(c.optimizer, total_steps)[1] for c in configs]
  train_step = make_vectorized_train_step(model, base, total_steps, mesh)
  eval_step = steps.make_eval_step(model, base, eval_mesh)
  replicated = parallel.replicated(eval_mesh)
  batch_sharding = NamedSharding(mesh, P(MEMBER_AXIS, DATA_AXIS))

  def run_eval(step: int) -> list[dict]:
    out = []
    for i, (config, workdir, writer) in enumerate(zip(configs, workdirs, writers, strict=True)):
      member = _member(states, i, replicated)
      model_vars = steps.variables(member.params, member.model_state)
      metrics = train.evaluate(
        eval_step, model_vars, dataset, config, eval_mesh, rngs[i]["eval"], step
      )
      runs.record_eval(workdir, step, metrics)
      writer.write_scalars(step, train.scalars("eval_", metrics))
      images = summaries.model_images(
        model, model_vars, dataset, config, rngs[i]["sample"], metrics.get("kl_per_dim")
      )
      writer.write_images(step, images)
      out.append(metrics)
    return out

  eval_every = train.every(base.eval_every_steps, spe)
  ckpt_every = train.every(base.checkpoint_every_steps, spe)
  history, eval_metrics, other_time = [], None, 0.0
  window = parallel.DispatchWindow()
  logging.info(
    "Training %d members for %d steps on mesh %s.", len(configs), total_steps, mesh.shape
  )
  start = time.perf_counter()
  for step in range(initial_step, total_steps):
    batch = _stack([s.batch(step) for s in streams])
    states, metrics = train_step(states, jax.device_put(batch, batch_sharding), train_rngs, hp)
    window.add(metrics["loss"])
    history.append((metrics, 1))
    done = step + 1
    t0 = time.perf_counter()
    if done % base.log_every_steps == 0 or done == total_steps:
      logged = train.mean_metrics(history)
      history = []
      for i, writer in enumerate(writers):
        member_metrics = jax.tree.map(lambda v, i=i: v[i], logged)
        train.check_finite(member_metrics, done)
        lr = {"learning_rate": float(schedules[i](done - 1))}
        writer.write_scalars(done, train.scalars("train_", member_metrics) | lr)
    if done % eval_every == 0 or done == total_steps:
      eval_metrics = run_eval(done)
    if done % ckpt_every == 0 or done == total_steps:
      if history:
        last = train.mean_metrics(history[-1:])
        for i in range(len(configs)):
          train.check_finite(jax.tree.map(lambda v, i=i: v[i], last), done)
      for i, ckpt in enumerate(checkpointers):
        ckpt.save(done, _member(states, i, replicated))
    other_time += time.perf_counter() - t0
  jax.block_until_ready(states)
  train_time = time.perf_counter() - start - other_time

  if eval_metrics is None:
    eval_metrics = run_eval(total_steps)
  trained = total_steps - initial_step
  results = []
  for i, (config, workdir) in enumerate(zip(configs, workdirs, strict=True)):
    checkpointers[i].close()
    writers[i].flush()
    rate = trained * config.data.batch_size / train_time if trained else None
    results.append(
      train.write_results(workdir, total_steps, eval_metrics[i], rate, train_time, len(devices))
    )
  return results
