"""The training loop's periodic actions, shared by single runs and vectorized sweep members.

A `Program` knows how to train steps [start, end) on the device and how to evaluate and hand out
each member's state; `run_loop` drives it: dispatches cut at logging, evaluation and checkpoint
steps, progress reports, logged train metrics, the non-finite-loss check, evaluations with their
TensorBoard scalars, images and history, checkpoints, and the training time, which counts every
dispatched step (the wait at log steps included) and leaves out evaluation and checkpoint saves;
it is also kept without the first evaluation interval, where the programs compile, as the steady
rate a long run sees.
"""

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from vae_jax import runs
from vae_jax.errors import NonFiniteLossError
from vae_jax.training import mesh as meshes
from vae_jax.training import preemption
from vae_jax.training.checkpoints import Checkpointer
from vae_jax.training.mesh import DispatchWindow


@dataclasses.dataclass
class Member:
  """One run the loop trains: its files and its learning-rate schedule.

  Attributes:
    workdir: the run directory.
    config: the run's config.
    writer: its TensorBoard writer.
    checkpointer: its Orbax checkpoints.
    lr_schedule: step -> learning rate, logged with the train metrics.
  """

  workdir: str
  config: ml_collections.ConfigDict
  writer: metric_writers.MetricWriter
  checkpointer: Checkpointer
  lr_schedule: Callable[[int], float]


class Program(Protocol):
  """What differs between a single run and vectorized members."""

  members: list[Member]
  steps_per_dispatch: int

  def train(self, start: int, end: int) -> jax.Array:
    """Dispatches steps [start, end), adding their metrics to the sums kept on the device.

    Returns a small output of the dispatch (not donated), to bound how many are in flight.
    """

  def take_metrics(self, restart: bool = True) -> dict:
    """The metric sums (on device) since they were last taken; `restart` starts new sums."""

  def member_metrics(self, metrics: dict, i: int) -> dict:
    """Member i's part of (host) metrics."""

  def evaluate(self, i: int, step: int) -> tuple[dict, dict]:
    """Member i's eval metrics (with `loss`) and TensorBoard images at `step`."""

  def state(self, i: int) -> Any:
    """Member i's train state, to checkpoint."""

  def block(self) -> None:
    """Waits until every dispatched step has run."""


@dataclasses.dataclass(frozen=True)
class Intervals:
  """Every how many steps the loop logs, evaluates and checkpoints."""

  log: int
  eval: int
  checkpoint: int

  def as_tuple(self) -> tuple[int, int, int]:
    """(log, eval, checkpoint)."""
    return (self.log, self.eval, self.checkpoint)


@dataclasses.dataclass
class TrainTime:
  """Seconds spent training, evaluation and checkpoint saves left out.

  Attributes:
    total: the whole run's.
    first: up to the run's first evaluation (compiling included), or None before it.
    first_steps: the steps trained by then.
  """

  total: float = 0.0
  first: float | None = None
  first_steps: int = 0

  def evaluated(self, seconds: float, steps: int) -> None:
    """Records an evaluation after `seconds` of training and `steps` steps (the first counts)."""
    if self.first is None:
      self.first, self.first_steps = seconds, steps

  def steady_examples_per_sec(self, trained_steps: int, batch_size: int) -> float | None:
    """Examples/s after the first evaluation interval; None when nothing was trained after it."""
    if self.first is None or trained_steps <= self.first_steps or self.total <= self.first:
      return None
    return (trained_steps - self.first_steps) * batch_size / (self.total - self.first)


def every(value: int, steps_per_epoch: int) -> int:
  """An interval in steps; values <= 0 mean once per epoch."""
  return steps_per_epoch if value <= 0 else value


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """The run's length: `num_train_steps` when set, else `num_epochs` epochs."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * steps_per_epoch


def intervals(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Intervals:
  """The config's intervals, with `<= 0` meaning once per epoch."""
  return Intervals(
    config.log_every_steps,
    every(config.eval_every_steps, steps_per_epoch),
    every(config.checkpoint_every_steps, steps_per_epoch),
  )


def dispatch_end(step: int, max_steps: int, total_steps: int, intervals: tuple[int, ...]) -> int:
  """The step where a dispatch starting at `step` ends.

  At most `max_steps` later and at `total_steps` at the latest, never past the next multiple of
  an interval (logging, evaluation, checkpoints), so those happen between dispatches.
  """
  end = min(step + max_steps, total_steps)
  for interval in intervals:
    end = min(end, (step // interval + 1) * interval)
  return end


def tensorboard_scalars(split: str, metrics: dict) -> dict[str, float]:
  """TensorBoard tags of metrics: `<split>/<name>`, vectors as `<name>/<split>/XX`.

  The prefix before the first '/' is TensorBoard's section, so train and eval scalars and each
  per-dimension vector (e.g. `kl_per_dim/eval/03`) get sections of their own.
  """
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    if v.ndim:
      out.update({f"{k}/{split}/{i:02d}": float(x) for i, x in enumerate(v.reshape(-1))})
    else:
      out[f"{split}/{k}"] = float(v)
  return out


def result_scalars(prefix: str, metrics: dict) -> dict[str, float]:
  """Flat results.json keys: `<prefix><name>`, a vector as `name_XX` (`kl_per_dim`: `kl_dim_XX`)."""
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    if v.ndim:
      name = "kl_dim" if k == "kl_per_dim" else k
      out.update({f"{prefix}{name}_{i:02d}": float(x) for i, x in enumerate(v.reshape(-1))})
    else:
      out[f"{prefix}{k}"] = float(v)
  return out


def check_finite(metrics: dict, step: int) -> None:
  """Raises `NonFiniteLossError` when the logged loss is NaN or infinite."""
  if not np.isfinite(metrics["loss"]):
    raise NonFiniteLossError(
      f"Non-finite training loss ({metrics['loss']}) at step {step}. Lower "
      "optimizer.learning_rate or set optimizer.grad_clip_norm; the last good checkpoint is kept."
    )


@dataclasses.dataclass
class _Interval:
  """Metric sums of the `steps` steps that ended at `step`, on the device until logged."""

  step: int
  steps: int
  sums: dict

  def fetch(self, program: Program) -> list[dict]:
    """Each member's mean metrics, after checking they are finite."""
    means = jax.tree.map(lambda v: np.asarray(v) / self.steps, meshes.fetch(self.sums))
    out = [program.member_metrics(means, i) for i in range(len(program.members))]
    for metrics in out:
      check_finite(metrics, self.step)
    return out

  def log(self, program: Program) -> None:
    """Writes each member's mean train metrics and learning rate to TensorBoard."""
    for member, metrics in zip(program.members, self.fetch(program), strict=True):
      lr = {"train/learning_rate": float(member.lr_schedule(self.step - 1))}
      member.writer.write_scalars(self.step, tensorboard_scalars("train", metrics) | lr)


def _evaluate(program: Program, step: int) -> list[dict]:
  out = []
  for i, member in enumerate(program.members):
    metrics, images = program.evaluate(i, step)
    runs.append_history(member.workdir, {"step": step, "eval_loss": float(metrics["loss"])})
    member.writer.write_scalars(step, tensorboard_scalars("eval", metrics))
    member.writer.write_images(step, images)
    out.append(metrics)
  return out


def _save(program: Program, step: int, unlogged: int) -> None:
  """Checkpoints every member at `step`, after checking its metrics since the last log."""
  if unlogged:
    _Interval(step, unlogged, program.take_metrics(restart=False)).fetch(program)
  for i, member in enumerate(program.members):
    member.checkpointer.save(step, program.state(i))


def _log_pending(program: Program, pending: _Interval | None) -> None:
  """Logs the interval waiting to be logged, if any; returns None (nothing is pending now)."""
  if pending is not None:
    pending.log(program)


def _stop(program: Program, step: int, unlogged: int, signum: int):
  """Saves every member at `step`, closes their files and raises `preemption.Stopped`."""
  _save(program, step, unlogged)
  for member in program.members:
    member.checkpointer.close()
    member.writer.flush()
  raise preemption.Stopped(signum, step, program.members[0].checkpointer.directory)


def run_loop(
  program: Program,
  initial_step: int,
  total_steps: int,
  every_: Intervals,
  stop: preemption.StopSignals | None = None,
) -> tuple[list[dict], TrainTime]:
  """Trains from `initial_step` to `total_steps` with the periodic actions.

  Args:
    program: what trains (a single run or vectorized members).
    initial_step: the step the state is at.
    total_steps: the run's length.
    every_: the logging, evaluation and checkpoint intervals.
    stop: signals that, between dispatches, save a checkpoint and raise `preemption.Stopped`.

  Returns:
    (each member's last eval metrics, the training time).
  """
  writer = metric_writers.MultiWriter([m.writer for m in program.members])
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  window, pending, unlogged = DispatchWindow(), None, 0
  eval_metrics, other_time, timing = None, 0.0, TrainTime()
  start, done = time.perf_counter(), initial_step
  while done < total_steps:
    step = done
    done = dispatch_end(step, program.steps_per_dispatch, total_steps, every_.as_tuple())
    window.add(program.train(step, done))
    unlogged += done - step
    report(done)
    if done % every_.log == 0 or done == total_steps:
      # Logged one interval late, so that fetching the sums never waits for the device.
      if pending is not None:
        pending.log(program)
      pending, unlogged = _Interval(done, unlogged, program.take_metrics()), 0
    due_eval = done % every_.eval == 0 or done == total_steps
    due_save = done % every_.checkpoint == 0 or done == total_steps
    if due_eval or due_save:
      program.block()
      t0 = time.perf_counter()
      pending = _log_pending(program, pending)
      if due_eval:
        timing.evaluated(t0 - start - other_time, done - initial_step)
        with report.timed("eval"):
          eval_metrics = _evaluate(program, done)
      if due_save:
        _save(program, done, unlogged)
      other_time += time.perf_counter() - t0
    signum = None if stop is None or done >= total_steps else stop.agreed(done % every_.log == 0)
    if signum is not None:
      program.block()
      _log_pending(program, pending)
      _stop(program, done, unlogged, signum)
  program.block()
  timing.total = time.perf_counter() - start - other_time
  _log_pending(program, pending)
  if eval_metrics is None:
    eval_metrics = _evaluate(program, total_steps)
  return eval_metrics, timing


def finish(
  program: Program,
  eval_metrics: list[dict],
  total_steps: int,
  trained_steps: int,
  train_time: TrainTime,
  num_devices: int,
) -> list[dict]:
  """Closes each member's checkpoints and writer and writes its results.json; returns them."""
  results = []
  for member, metrics in zip(program.members, eval_metrics, strict=True):
    member.checkpointer.close()
    member.writer.flush()
    batch = member.config.data.batch_size
    rate = trained_steps * batch / train_time.total if trained_steps else None
    record = {
      "step": total_steps,
      **result_scalars("eval_", metrics),
      "train_examples_per_sec": rate,
      "train_time_sec": train_time.total,
      "train_steady_examples_per_sec": train_time.steady_examples_per_sec(trained_steps, batch),
      "num_devices": num_devices,
      "target": runs.run_length(member.config),
    }
    runs.write_json(runs.results_path(member.workdir), record)
    logging.info("Results: %s", record)
    results.append(record)
  return results
