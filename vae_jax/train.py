"""The training loop: state, data-parallel steps, evaluation, logging and checkpoints.

`train_and_evaluate(config, workdir)` is the whole run. Its collaborators (the device mesh and the
dataset) can be passed as keyword arguments, which is how tests run it on a chosen set of devices or
on synthetic data.
"""

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from vae_jax import (
  checkpointing,
  config_checks,
  objectives,
  optim,
  parallel,
  runs,
  steps,
  summaries,
)
from vae_jax.data import Dataset, load_dataset
from vae_jax.models import build_model


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """The run's length: `num_train_steps` when set, else `num_epochs` epochs."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * steps_per_epoch


def every(value: int, steps_per_epoch: int) -> int:
  """An interval in steps; values <= 0 mean once per epoch."""
  return steps_per_epoch if value <= 0 else value


def scalars(prefix: str, metrics: dict) -> dict[str, float]:
  """Flattens metrics to scalars: a vector `name` becomes `name_XX` (`kl_per_dim`: `kl_dim_XX`)."""
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    if v.ndim:
      name = "kl_dim" if k == "kl_per_dim" else k
      out.update({f"{prefix}{name}_{i:02d}": float(x) for i, x in enumerate(v.reshape(-1))})
    else:
      out[f"{prefix}{k}"] = float(v)
  return out


def mean_metrics(history: list[tuple[dict, int]]) -> dict:
  """Fetches (metrics summed over n steps, n) pairs from the devices; the mean over all steps."""
  fetched = jax.device_get([sums for sums, _ in history])
  total = sum(n for _, n in history)
  return jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0) / total, *fetched)


def dispatch_end(step: int, max_steps: int, total_steps: int, intervals: tuple[int, ...]) -> int:
  """The step where a dispatch starting at `step` ends.

  At most `max_steps` later and at `total_steps` at the latest, never past the next multiple of
  an interval (logging, evaluation, checkpoints), so those happen between dispatches.
  """
  end = min(step + max_steps, total_steps)
  for interval in intervals:
    end = min(end, (step // interval + 1) * interval)
  return end


def stacked_batches(stream, start: int, end: int, size: int) -> dict[str, np.ndarray]:
  """The global batches of steps [start, end) stacked on a leading axis, padded to `size` rows."""
  batches = [stream.batch(s) for s in range(start, end)]
  batches += batches[-1:] * (size - len(batches))
  return jax.tree.map(lambda *b: np.stack(b), *batches)


def check_finite(metrics: dict, step: int) -> None:
  """Raises `NonFiniteLossError` when the logged loss is NaN or infinite."""
  if not np.isfinite(metrics["loss"]):
    raise NonFiniteLossError(
      f"Non-finite training loss ({metrics['loss']}) at step {step}. Lower "
      "optimizer.learning_rate or set optimizer.grad_clip_norm; the last good checkpoint is kept."
    )


def evaluate(
  eval_step, model_vars: dict, dataset: Dataset, config, mesh, rng, step: int
) -> dict[str, np.ndarray]:
  """Per-example means of every objective term over the whole test split, and the loss at `step`."""
  batches = dataset.eval_batches(config.data.eval_batch_size)
  totals = steps.sum_eval_batches(eval_step, model_vars, batches, mesh, rng)
  count = totals.pop("count")
  metrics = {k: v / count for k, v in totals.items()}
  if config.objective.estimator == "iwae":
    metrics["loss"] = -metrics["iwae"]
  else:
    kl_parts = metrics.get("kl_per_dim", np.atleast_1d(metrics["kl"]))
    penalty, _ = objectives.kl_penalty(kl_parts, config.objective, step)
    metrics["loss"] = -metrics["recon"] + float(penalty)
  metrics["loss"] += metrics.get("aux_loss", 0.0)
  return metrics


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  dataset: Dataset | None = None,
) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates, writes results.json.

  Args:
    config: the run config (see configs/default.py).
    workdir: where checkpoints, TensorBoard events, config.json and results.json go.
    mesh: device mesh with a 'data' axis; default all local devices.
    dataset: in-memory dataset; default `load_dataset(config.data)`.

  Returns:
    The final results (also written to `<workdir>/results.json`).
  """
  mesh = mesh or parallel.make_mesh()
  config_checks.validate(config, mesh.size)
  dataset = dataset or load_dataset(config.data)
  config_checks.validate_for_data(config, dataset.image_shape, dataset.num_classes)
  checkpointing.save_config(config, workdir)

  stream = dataset.train_stream(config.data.batch_size, config.seed)
  spe = stream.steps_per_epoch
  total_steps = num_train_steps(config, spe)
  model = build_model(config.model, dataset.image_shape, dataset.num_classes)
  tx, lr_schedule = optim.make_optimizer(config.optimizer, total_steps)
  keys = parallel.run_keys(config.seed)
  init_rng, train_rng, eval_rng, sample_rng = (keys[k] for k in ("init", "train", "eval", "sample"))

  state = jax.jit(
    lambda r: steps.init_state(model, tx, r, dataset.image_shape, dataset.num_classes),
    out_shardings=parallel.replicated(mesh),
  )(init_rng)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info("Resumed from %s at step %d.", ckpt.directory, int(state.step))
  initial_step = int(state.step)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if initial_step == 0:
    writer.write_hparams(checkpointing.flatten_config(config) | {"num_devices": mesh.size})
  per_dispatch = config.steps_per_execution
  if per_dispatch == 1:
    train_step = steps.make_train_step(model, tx, config, mesh)
  else:
    train_step = steps.make_multi_step(model, tx, config, mesh)
  eval_step = steps.make_eval_step(model, config, mesh)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  eval_every = every(config.eval_every_steps, spe)
  ckpt_every = every(config.checkpoint_every_steps, spe)
  sharding = parallel.batch_sharded(mesh)
  stacked_sharding = parallel.stacked_batch_sharded(mesh)

  def run_eval(step: int) -> dict:
    with report.timed("eval"):
      model_vars = steps.variables(state.params, state.model_state)
      metrics = evaluate(eval_step, model_vars, dataset, config, mesh, eval_rng, step)
      runs.record_eval(workdir, step, metrics)
      writer.write_scalars(step, scalars("eval_", metrics))
      images = summaries.model_images(
        model, model_vars, dataset, config, sample_rng, metrics.get("kl_per_dim")
      )
      writer.write_images(step, images)
    return metrics

  history, last_good, window = [], None, parallel.DispatchWindow()
  eval_metrics, other_time = None, 0.0
  logging.info("Training %d steps (%d per epoch) on %d devices.", total_steps, spe, mesh.size)
  start = time.perf_counter()
  intervals = (config.log_every_steps, eval_every, ckpt_every)
  done = initial_step
  while done < total_steps:
    step, done = done, dispatch_end(done, per_dispatch, total_steps, intervals)
    if per_dispatch == 1:
      batch = jax.device_put(stream.batch(step), sharding)
      state, metrics = train_step(state, batch, train_rng)
    else:
      batches = jax.device_put(stacked_batches(stream, step, done, per_dispatch), stacked_sharding)
      state, metrics = train_step(state, batches, train_rng, done - step)
    window.add(metrics["loss"])
    history.append((metrics, done - step))
    report(done)
    if done % config.log_every_steps == 0 or done == total_steps:
      train_metrics = mean_metrics(history)
      history = []
      check_finite(train_metrics, done)
      train_scalars = scalars("train_", train_metrics)
      writer.write_scalars(done, train_scalars | {"learning_rate": float(lr_schedule(done - 1))})
      last_good = done
    t0 = time.perf_counter()
    if done % eval_every == 0 or done == total_steps:
      eval_metrics = run_eval(done)
    if done % ckpt_every == 0 or done == total_steps:
      if last_good != done:
        check_finite(mean_metrics(history[-1:]), done)
      ckpt.save(done, state)
    other_time += time.perf_counter() - t0
  jax.block_until_ready(state)
  train_time = time.perf_counter() - start - other_time

  if eval_metrics is None:
    eval_metrics = run_eval(total_steps)
  ckpt.close()
  writer.flush()
  trained = total_steps - initial_step
  rate = trained * config.data.batch_size / train_time if trained else None
  return write_results(workdir, total_steps, eval_metrics, rate, train_time, mesh.size)


def write_results(
  workdir: str, step: int, eval_metrics: dict, rate, train_time: float, num_devices: int
) -> dict:
  """Writes and returns `<workdir>/results.json`: the final eval metrics and training speed."""
  results = {
    "step": step,
    **scalars("eval_", eval_metrics),
    "train_examples_per_sec": rate,
    "train_time_sec": train_time,
    "num_devices": num_devices,
  }
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  logging.info("Results: %s", results)
  return results
