"""Vectorized sweeps: members that share array shapes train as ONE jitted program.

Members may differ only in `VECTORIZABLE` fields (seed, beta, KL schedule and capacity numbers,
learning rate, weight decay). Their train states are stacked on a leading member axis and
`steps.update` is `vmap`ped over members (conv members on CPU: a `lax.map`, see `looped`), with
each member's differing fields passed as traced values; `jax.shard_map` maps that over a 2-D
mesh whose 'member' axis spreads members over devices beside the 'data' axis that splits each
member's batch. Each member still gets its own workdir with config.json, Orbax checkpoints (the
same TrainState a single run saves), TensorBoard events, eval history and results.json, so
`vae_jax.main`, `vae_jax.evaluate` and `vae_jax.tools` treat it like any other run. The periodic
actions are `loop.run_loop`'s, the same as a single run's.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import configuration, runs
from vae_jax.data import Dataset, load_dataset
from vae_jax.errors import CheckpointError, ConfigError
from vae_jax.evaluation import summaries
from vae_jax.models import build_model
from vae_jax.training import compile_options, loop, optimizer, preemption, steps, train
from vae_jax.training import mesh as meshes
from vae_jax.training.checkpoints import Checkpointer
from vae_jax.training.feed import Feed
from vae_jax.training.keys import run_keys, step_keys
from vae_jax.training.mesh import DATA_AXIS
from vae_jax.training.state import eval_variables

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
    ConfigError: members differ in a field that changes shapes or code paths.
  """
  flats = [configuration.flatten(c) for c in configs]
  differing = sorted(k for k in flats[0] if any(f.get(k) != flats[0][k] for f in flats[1:]))
  fixed = [k for k in differing if k not in VECTORIZABLE]
  if fixed:
    raise ConfigError(
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
  devices = np.asarray(devices if devices is not None else jax.devices())
  member = math.gcd(num_members, devices.size)
  return Mesh(devices.reshape(member, devices.size // member), (MEMBER_AXIS, DATA_AXIS))


def looped(fn, in_axes: tuple):
  """`jax.vmap(fn, in_axes)` (in_axes 0 or None) as a `lax.map`: one member after the other.

  Same numbers as the vmap; what differs is the program. A vmapped convolution over members is a
  grouped convolution, which XLA:CPU runs ~2x slower than the members' convolutions one by one
  (8 `beta4` members: ~1.85 s against ~0.83 s per step on 2 cores); a loop also compiles the
  update once (~10 s against ~12.5 s for the vmap and ~35 s unrolled).
  """

  def mapped(*args):
    xs = tuple(a if ax == 0 else None for a, ax in zip(args, in_axes, strict=True))

    def one(x):
      return fn(*(a if ax is None else v for a, v, ax in zip(args, x, in_axes, strict=True)))

    return jax.lax.map(one, xs)

  return mapped


def loops_members(base: ml_collections.ConfigDict) -> bool:
  """Whether members run in a loop (`looped`) rather than vmapped: conv models on CPU."""
  return jax.default_backend() == "cpu" and base.model.arch != "mlp"


def member_steps(
  model, base: ml_collections.ConfigDict, total_steps: int, mesh, assemble, steps_per_epoch: int
):
  """The vectorized step, unjitted: `(states, arrays, inputs, rngs, hparams) -> (states, metrics)`.

  `inputs` holds each member's step inputs on a leading member axis; each member assembles its
  batch from them and the shared `arrays` (see `training.feed`). Where `loops_members(base)`,
  each device runs its members' updates one after the other in a `lax.map` (`looped`) instead of
  vmapped.
  """
  own = model.param_optimizers(base.model)
  mapped = looped if loops_members(base) else jax.vmap

  def member_update(state, arrays, inputs, keys, rng_batch, hparams):
    config = traced_config(base, hparams)
    tx, _ = optimizer.make_optimizer(config.optimizer, total_steps, own, steps_per_epoch)
    batch = assemble(arrays, inputs)
    return steps.update(model, tx, config, state, batch, keys, rng_batch)

  member, data = P(MEMBER_AXIS), P(MEMBER_AXIS, DATA_AXIS)
  sharded = jax.shard_map(
    mapped(member_update, in_axes=(0, None, 0, 0, 0, 0)),
    mesh=mesh,
    in_specs=(member, P(), data, data, member, member),
    out_specs=(member, member),
  )

  def step(states, arrays, inputs, rngs, hparams):
    size = jax.tree.leaves(inputs)[0].shape[1]
    keys, rng_batch = jax.vmap(lambda r, s: step_keys(r, s, size))(rngs, states.step)
    return sharded(states, arrays, inputs, keys, rng_batch, hparams)

  return step


def make_vectorized_train_step(
  model, base, total_steps: int, mesh, assemble=steps.pass_batch, steps_per_epoch: int = 1
):
  """Jitted `(states, arrays, inputs, rngs, hparams, sums) -> (states, sums, loss)`.

  `sums` are the members' running metric sums on the device; `loss` the step's losses.
  """
  step = member_steps(model, base, total_steps, mesh, assemble, steps_per_epoch)

  @functools.partial(
    jax.jit, donate_argnums=(0, 5), compiler_options=compile_options.step_options()
  )
  def train_step(states, arrays, inputs, rngs, hparams, sums):
    states, metrics = step(states, arrays, inputs, rngs, hparams)
    return states, jax.tree.map(jnp.add, sums, metrics), metrics["loss"]

  return train_step


def _stack(trees: list):
  """Trees stacked on a new leading axis, on the host (then placed where they belong)."""
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


class Members:
  """The `loop.Program` of members stacked on a 'member' mesh axis."""

  steps_per_dispatch = 1

  def __init__(self, configs, workdirs, dataset: Dataset, devices, total_steps: int):
    base = configs[0]
    self.configs, self.dataset = configs, dataset
    self.mesh = make_member_mesh(len(configs), devices)
    self.eval_mesh = meshes.make_mesh(devices)
    self._take = jax.jit(  # Member i's state, replicated (also across processes).
      lambda states, i: jax.tree.map(lambda v: v[i], states),
      out_shardings=meshes.replicated(self.eval_mesh),
    )
    self.model = build_model(base.model, dataset.spec)
    own = self.model.param_optimizers(base.model)
    self.keys = [run_keys(c.seed) for c in configs]
    self.streams = [dataset.train_stream(c.data.batch_size, c.seed) for c in configs]
    spe = self.streams[0].steps_per_epoch
    states = []
    for config, workdir in zip(configs, workdirs, strict=True):
      tx, _ = optimizer.make_optimizer(config.optimizer, total_steps, own, spe)
      states.append(train.initial_state(self.model, tx, config, dataset, self.eval_mesh, workdir))
    resumed = sorted({int(s.step) for s in states})
    if len(resumed) > 1:
      raise CheckpointError(
        f"Members were checkpointed at different steps {resumed}; resume them one by one "
        "with vae_jax.main (or --executor=local)."
      )
    self.initial_step = resumed[0]
    member_sharding = NamedSharding(self.mesh, P(MEMBER_AXIS))
    self.states = meshes.put(_stack(states), member_sharding)
    self.train_rngs = meshes.put(jnp.stack([k["train"] for k in self.keys]), member_sharding)
    hparams = member_hparams(configs)
    self.hparams = meshes.put(hparams, member_sharding)
    self.feed = Feed(self.streams[0], self.mesh, base.data.get("on_device", True))
    assemble = self.feed.assemble
    args = (self.model, base, total_steps, self.mesh, assemble, spe)
    self._step = make_vectorized_train_step(*args)
    step = member_steps(*args)
    shapes = jax.eval_shape(
      step, self.states, self.feed.arrays, self._inputs(0), self.train_rngs, self.hparams
    )[1]
    self._zeros = meshes.put(
      jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes), member_sharding
    )
    self._sums = jax.tree.map(lambda z: z.copy(), self._zeros)
    self._eval_step = steps.make_eval_step(self.model, base, self.eval_mesh)
    self.members = [
      loop.Member(
        workdir,
        config,
        runs.metric_writer(workdir),
        Checkpointer(workdir, config.keep_checkpoints),
        optimizer.make_optimizer(config.optimizer, total_steps, own, spe)[1],
      )
      for config, workdir in zip(configs, workdirs, strict=True)
    ]

  def _inputs(self, step: int) -> dict:
    """Every member's inputs of `step`, stacked on the member axis and sharded over the mesh."""
    inputs = _stack([self.feed.host_inputs(step, s) for s in self.streams])
    return meshes.put(inputs, NamedSharding(self.mesh, P(MEMBER_AXIS, DATA_AXIS)))

  def train(self, start: int, end: int) -> jax.Array:  # noqa: D102
    arrays = self.feed.arrays
    for step in range(start, end):
      self.states, self._sums, loss = self._step(
        self.states, arrays, self._inputs(step), self.train_rngs, self.hparams, self._sums
      )
    return loss

  def take_metrics(self, restart: bool = True) -> dict:  # noqa: D102
    sums = self._sums
    if restart:
      self._sums = jax.tree.map(lambda z: z.copy(), self._zeros)
    return sums

  def member_metrics(self, metrics: dict, i: int) -> dict:  # noqa: D102
    return jax.tree.map(lambda v: v[i], metrics)

  def state(self, i: int):  # noqa: D102
    return self._take(self.states, i)

  def evaluate(self, i: int, step: int) -> tuple[dict, dict]:  # noqa: D102
    member = self.state(i)
    model_vars = eval_variables(member)
    config, keys = self.configs[i], self.keys[i]
    metrics = train.evaluate(
      self._eval_step, model_vars, self.dataset, config, self.eval_mesh, keys["eval"], step
    )
    images = summaries.model_images(
      self.model, model_vars, self.dataset, config, keys["sample"], self.eval_mesh, metrics
    )
    return metrics, images

  def block(self) -> None:  # noqa: D102
    jax.block_until_ready(self.states)


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
  devices = devices if devices is not None else jax.devices()
  for config in configs:
    configuration.resolve(config)
  member_hparams(configs)
  data_devices = make_member_mesh(len(configs), devices).shape[DATA_AXIS]
  for config in configs:
    configuration.validate(config, data_devices)
    configuration.validate(config, len(devices))
  for workdir in workdirs:
    runs.check_workdir(workdir)
  base = configs[0]
  dataset = dataset or load_dataset(base.data)
  configuration.validate_for_data(base, dataset.spec, base.data.name)
  for config, workdir in zip(configs, workdirs, strict=True):
    runs.save_config(config, workdir)
  spe = dataset.train_stream(base.data.batch_size, base.seed).steps_per_epoch
  total_steps = loop.num_train_steps(base, spe)
  program = Members(configs, workdirs, dataset, devices, total_steps)
  if program.initial_step == 0:
    for member in program.members:
      hparams = configuration.flatten(member.config) | {"num_devices": len(devices)}
      member.writer.write_hparams(hparams)
  logging.info(
    "Training %d members for %d steps on mesh %s.", len(configs), total_steps, program.mesh.shape
  )
  with preemption.StopSignals() as stop:
    eval_metrics, train_time = loop.run_loop(
      program, program.initial_step, total_steps, loop.intervals(base, spe), stop
    )
  trained = total_steps - program.initial_step
  return loop.finish(program, eval_metrics, total_steps, trained, train_time, len(devices))
