"""A training run: `train_and_evaluate(config, workdir)`.

Builds the state, steps and data stream of one run and drives them with `loop.run_loop`. Its
collaborators (the device mesh and the dataset) can be passed as keyword arguments, which is how
tests run it on a chosen set of devices or on synthetic data.
"""

import jax
import ml_collections
import numpy as np
from absl import logging

from vae_jax import configuration, runs
from vae_jax.data import Dataset, load_dataset
from vae_jax.evaluation import summaries
from vae_jax.evaluation.likelihood import bits_per_dim
from vae_jax.losses import elbo
from vae_jax.models import Model, build_model
from vae_jax.training import loop, optimizer, precision, preemption, steps
from vae_jax.training import mesh as meshes
from vae_jax.training.checkpoints import Checkpointer
from vae_jax.training.feed import Feed
from vae_jax.training.keys import run_keys
from vae_jax.training.state import TrainState, eval_variables, init_state


def evaluate(
  eval_step, model_vars: dict, dataset: Dataset, config, mesh, rng, step: int
) -> dict[str, np.ndarray]:
  """Per-example means of every objective term over the whole test split, and the loss at `step`.

  The loss is the training objective at `step`: -recon plus the KL penalty (or -iwae), the
  model's `aux_loss`, and its batch loss averaged over the eval batches. `bits_per_dim` is the
  ELBO-based NLL, -elbo / (D ln 2) for D = H * W * C (see `evaluation.likelihood.bits_per_dim`).
  """
  size = meshes.split_batch_size(config.data.eval_batch_size, mesh.size, "data.eval_batch_size")
  batches = dataset.eval_batches(size)
  totals = steps.sum_eval_batches(eval_step, model_vars, batches, mesh, rng)
  count = totals.pop("count")
  metrics = {k: v / count for k, v in totals.items()}
  if config.objective.estimator == "iwae":
    metrics["loss"] = -metrics["iwae"]
  else:
    kl_parts = metrics.get("kl_per_dim", np.atleast_1d(metrics["kl"]))
    penalty, _ = elbo.kl_penalty(kl_parts, config.objective, step)
    metrics["loss"] = -metrics["recon"] + float(penalty)
  metrics["loss"] += metrics.get("aux_loss", 0.0) + metrics.get("batch_loss", 0.0)
  metrics["bits_per_dim"] = bits_per_dim(-float(metrics["elbo"]), dataset.spec.image_shape)
  return metrics


def initial_state(model: Model, tx, config, dataset: Dataset, mesh, workdir: str) -> TrainState:
  """The run's state: restored from its newest checkpoint, else initialised from `config.seed`."""
  state = jax.jit(
    lambda r: init_state(model, tx, r, dataset.spec), out_shardings=meshes.replicated(mesh)
  )(run_keys(config.seed)["init"])
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info("Resumed from %s at step %d.", ckpt.directory, int(state.step))
  ckpt.close()
  return state


class SingleRun:
  """The `loop.Program` of one run on a data-parallel mesh.

  A dispatch of `steps_per_execution` steps runs as one compiled loop (`steps.make_dispatch_steps`);
  a shorter one (cut at a logging, evaluation or checkpoint step) as single steps, so that only
  two programs are ever compiled. The metric sums stay on the device between logs.
  """

  def __init__(self, config, workdir: str, dataset: Dataset, mesh, total_steps: int):
    self.config, self.dataset, self.mesh = config, dataset, mesh
    self.model = build_model(config.model, dataset.spec)
    own = self.model.param_optimizers(config.model)
    stream = dataset.train_stream(config.data.batch_size, config.seed)
    tx, schedule = optimizer.make_optimizer(
      config.optimizer, total_steps, own, stream.steps_per_epoch
    )
    self.keys = run_keys(config.seed)
    self.state_ = initial_state(self.model, tx, config, dataset, mesh, workdir)
    self.feed = Feed(stream, mesh, config.data.get("on_device", True))
    self.steps_per_dispatch = config.steps_per_execution
    args = (self.model, tx, config, mesh, self.feed.assemble)
    self._single, self._multi = steps.make_dispatch_steps(*args)
    self._zeros = steps.zero_metrics(
      steps.global_step(*args),
      self.state_,
      self.feed.arrays,
      self.feed.inputs(0, 1),
      self.keys["train"],
      meshes.replicated(mesh),
    )
    self._sums = jax.tree.map(lambda z: z.copy(), self._zeros)
    self._eval_step = steps.make_eval_step(self.model, config, mesh)
    writer = runs.metric_writer(workdir)
    checkpointer = Checkpointer(workdir, config.keep_checkpoints)
    self.members = [loop.Member(workdir, config, writer, checkpointer, schedule)]

  def train(self, start: int, end: int) -> jax.Array:  # noqa: D102
    rng, arrays = self.keys["train"], self.feed.arrays
    if end - start == self.steps_per_dispatch > 1:
      inputs = self.feed.inputs(start, end)
      self.state_, self._sums, loss = self._multi(self.state_, arrays, inputs, rng, self._sums)
      return loss
    for step in range(start, end):
      inputs = self.feed.inputs(step, step + 1)
      self.state_, self._sums, loss = self._single(self.state_, arrays, inputs, rng, self._sums)
    return loss

  def take_metrics(self, restart: bool = True) -> dict:  # noqa: D102
    sums = self._sums
    if restart:
      self._sums = jax.tree.map(lambda z: z.copy(), self._zeros)
    return sums

  def member_metrics(self, metrics: dict, i: int) -> dict:  # noqa: D102
    del i
    return metrics

  def evaluate(self, i: int, step: int) -> tuple[dict, dict]:  # noqa: D102
    del i
    model_vars = eval_variables(self.state_)
    metrics = evaluate(
      self._eval_step, model_vars, self.dataset, self.config, self.mesh, self.keys["eval"], step
    )
    images = summaries.model_images(
      self.model, model_vars, self.dataset, self.config, self.keys["sample"], self.mesh, metrics
    )
    return metrics, images

  def state(self, i: int) -> TrainState:  # noqa: D102
    del i
    return self.state_

  def block(self) -> None:  # noqa: D102
    jax.block_until_ready(self.state_)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  dataset: Dataset | None = None,
  stop_signals: tuple[int, ...] = (),
) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates, writes results.json.

  Args:
    config: the run config (see configs/default.py).
    workdir: where checkpoints, TensorBoard events, config.json and results.json go.
    mesh: device mesh with a 'data' axis; default all local devices.
    dataset: in-memory dataset; default `load_dataset(config.data)`.
    stop_signals: signals that stop the run after saving a checkpoint (default SIGTERM, SIGINT
      and SIGUSR1; see `preemption`).

  Returns:
    The final results (also written to `<workdir>/results.json`).

  Raises:
    preemption.Stopped: a stop signal arrived; the checkpoint at the step it names is saved.
  """
  mesh = mesh or meshes.make_mesh()
  configuration.resolve(config)
  configuration.validate(config, mesh.size)
  runs.check_workdir(workdir)
  dataset = dataset or load_dataset(config.data)
  configuration.validate_for_data(config, dataset.spec, config.data.name)
  runs.save_config(config, workdir)
  spe = dataset.train_stream(config.data.batch_size, config.seed).steps_per_epoch
  total_steps = loop.num_train_steps(config, spe)
  program = SingleRun(config, workdir, dataset, mesh, total_steps)
  initial_step = int(program.state_.step)
  writer = program.members[0].writer
  if initial_step == 0:
    writer.write_hparams(configuration.flatten(config) | {"num_devices": mesh.size})
  dtype = precision.compute_dtype(config)
  if dtype != np.float32 and jax.default_backend() == "cpu":
    logging.warning(
      "dtype=%s on CPU: usually slower than float32, and XLA:CPU sums bias gradients in it "
      "(see vae_jax/training/precision.py).",
      dtype.name,
    )
  with preemption.StopSignals(stop_signals) as stop:
    # Logged once the handlers are in place: a supervisor may signal from this line on.
    logging.info("Training %d steps (%d per epoch) on %d devices.", total_steps, spe, mesh.size)
    eval_metrics, train_time = loop.run_loop(
      program, initial_step, total_steps, loop.intervals(config, spe), stop
    )
  results = loop.finish(
    program, eval_metrics, total_steps, total_steps - initial_step, train_time, mesh.size
  )
  return results[0]
