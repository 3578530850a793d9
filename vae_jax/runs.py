"""A run's files, and the one way to reopen a run.

A workdir holds `config.json` (the run's config), `checkpoints/` (Orbax), `results.json` (written
when training ends), `eval_history.jsonl` (one line per evaluation: training's every
`eval_every_steps`, and each metric group `vae_jax.evaluate` computes), `eval/` (evaluate's
results), `tools/` and TensorBoard events. `open_run(workdir)` reads the config (migrating older
formats), rebuilds the model and restores a checkpoint, for `vae_jax.evaluate` and `vae_jax.tools`.
"""

import dataclasses
import json
import os
import tempfile

import jax
import ml_collections
from clu import metric_writers

from vae_jax import configuration
from vae_jax.data import Dataset, load_dataset
from vae_jax.data.spec import DataSpec
from vae_jax.errors import CheckpointError, ConfigError, WorkdirError, writing
from vae_jax.models import Model, build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer
from vae_jax.training.checkpoints import Checkpointer
from vae_jax.training.keys import run_keys
from vae_jax.training.state import eval_variables, init_state, variables

CONFIG = "config.json"
RESULTS = "results.json"
HISTORY = "eval_history.jsonl"


def write_json(path: str, value) -> None:
  """Writes JSON atomically: readers see the old file or the whole new one, never a part.

  Only process 0 writes; the other processes of a multi-process run return at once.

  Raises:
    WriteError: the file system refused (no space left, read-only, I/O error); the old file, if
      any, is unchanged.
  """
  if not meshes.is_primary():
    return
  tmp = f"{path}.tmp"
  with writing(path, "The file it would replace, if any, is unchanged."):
    try:
      with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)


def check_workdir(workdir: str) -> None:
  """Checks, writing nothing that stays, that `workdir` is (or can become) a writable directory.

  Raises:
    WorkdirError: it is a file, or it (or the folder it would be made in) cannot be written.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory; give a directory path.")
  parent = workdir
  while not os.path.exists(parent):
    parent = os.path.dirname(os.path.abspath(parent))
  if not os.path.isdir(parent):
    raise WorkdirError(f"--workdir={workdir} cannot be made: {parent} is a file.")
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".vae_jax_probe_", dir=parent))
  except OSError as e:
    where = "" if parent == workdir else f" (it would be made in {parent})"
    raise WorkdirError(
      f"--workdir={workdir} is not writable{where}: {e.strerror}; give a directory you can "
      "write to."
    ) from e


def results_path(workdir: str) -> str:
  """`<workdir>/results.json`."""
  return os.path.join(workdir, RESULTS)


def read_results(workdir: str) -> dict | None:
  """The run's results.json, or None when training has not finished (or it is unreadable)."""
  try:
    with open(results_path(workdir)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def run_length(config: ml_collections.ConfigDict) -> dict[str, int]:
  """How long the config asks the run to be, as recorded in results.json (`target`)."""
  if config.num_train_steps > 0:
    return {"num_train_steps": int(config.num_train_steps)}
  return {"num_epochs": int(config.num_epochs)}


def load_config(workdir: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """The config a run was trained with, in today's format, with flat `overrides` applied.

  Raises:
    CheckpointError: the workdir has no config.json (it is not a training run).
  """
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir} is not a training run: {path} does not exist.")
  with open(path) as f:
    config = ml_collections.ConfigDict(configuration.migrate(json.load(f)))
  if overrides:
    config.update_from_flattened_dict(overrides)
  return config


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `config.json`, refusing to reuse a workdir made by a different config.

  Raises:
    CheckpointError: the workdir's config.json differs in a field that changes the run.
  """
  path = os.path.join(workdir, CONFIG)
  if os.path.exists(path):
    old = configuration.flatten(load_config(workdir))
    changed = configuration.changed_fields(old, configuration.flatten(config))
    if changed:
      raise CheckpointError(
        f"{workdir} holds a run with a different config ({', '.join(changed)}); "
        "use another --workdir or the original config."
      )
  os.makedirs(workdir, exist_ok=True)
  write_json(path, json.loads(config.to_json_best_effort()))


class _CheckedWriter:
  """A clu metric writer whose file-system failures become one `WriteError`."""

  def __init__(self, writer, logdir: str):
    self._writer, self._logdir = writer, logdir

  def __getattr__(self, name: str):
    method = getattr(self._writer, name)

    def checked(*args, **kwargs):
      with writing(f"TensorBoard events in {self._logdir}", "The checkpoints so far are intact."):
        return method(*args, **kwargs)

    return checked


def metric_writer(logdir: str):
  """The TensorBoard writer of a run (or its eval/ or tools/ folder); only process 0 writes.

  Writes are synchronous, so that a full disk fails in this thread, as one `WriteError`, rather
  than as a traceback from a background thread.
  """
  writer = metric_writers.create_default_writer(
    logdir, just_logging=jax.process_index() > 0, asynchronous=False
  )
  return _CheckedWriter(writer, logdir)


def append_history(workdir: str, record: dict) -> None:
  """Appends one evaluation record to the run's `eval_history.jsonl` (process 0 only)."""
  if not meshes.is_primary():
    return
  path = os.path.join(workdir, HISTORY)
  with writing(path, "The checkpoints written so far are intact."), open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def read_history(workdir: str) -> list[dict]:
  """Every record of the run's `eval_history.jsonl`, oldest first."""
  path = os.path.join(workdir, HISTORY)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _best_step(workdir: str, saved: list[int]) -> int:
  """The saved step whose training evaluation had the lowest loss."""
  candidates = [
    h
    for h in read_history(workdir)
    if "metric" not in h and "eval_loss" in h and h["step"] in saved
  ]
  if not candidates:
    raise CheckpointError(f"{workdir} has no evaluated checkpoint to call best; use --checkpoint.")
  return min(candidates, key=lambda h: h["eval_loss"])["step"]


def resolve_step(workdir: str, checkpoint: str, saved: list[int]) -> int:
  """Turns 'latest', 'best' or a step number into a saved step.

  Raises:
    CheckpointError: no checkpoints, or the asked-for one does not exist.
  """
  if not saved:
    raise CheckpointError(f"{workdir} has no checkpoints; train it first with vae_jax.main.")
  if checkpoint == "latest":
    return saved[-1]
  if checkpoint == "best":
    return _best_step(workdir, saved)
  if not checkpoint.isdigit() or int(checkpoint) not in saved:
    raise CheckpointError(
      f"--checkpoint={checkpoint!r} is not 'latest', 'best' or a saved step {saved}."
    )
  return int(checkpoint)


@dataclasses.dataclass
class Run:
  """A reopened run.

  Attributes:
    workdir: the run directory.
    config: the run's config (from config.json).
    model: the model.
    dataset: the run's dataset; None when the run was opened with only its `DataSpec`.
    step: the chosen checkpoint's step.
    model_vars: its variables (`{'params': ..., **model_state}`) at `step`; None until restored.
  """

  workdir: str
  config: ml_collections.ConfigDict
  model: Model
  dataset: Dataset | None
  step: int
  model_vars: dict | None = None


def open_run(
  workdir: str,
  checkpoint: str = "latest",
  *,
  overrides: dict | None = None,
  dataset: Dataset | None = None,
  mesh: jax.sharding.Mesh | None = None,
  restore: bool = True,
  spec: DataSpec | None = None,
) -> Run:
  """Reopens a run: its config, dataset, model and checkpoint, restored unless `restore=False`.

  Args:
    workdir: the run directory (written by `vae_jax.main`).
    checkpoint: 'latest', 'best' (lowest training eval loss) or a step number.
    overrides: flat {'data.manual_dir': ...} changes that do not alter the model (e.g. where the
      data lives on this machine).
    dataset: the dataset; default `load_dataset(config.data)`.
    mesh: where the variables go (replicated); default all local devices.
    restore: False stops before restoring (enough to check what a command may ask of the run).
    spec: the dataset's facts, for a caller that needs only the model and its variables (e.g. a
      second-stage model built on this run): no dataset is loaded and `run.dataset` is None.

  Raises:
    CheckpointError: the workdir is not a run, has no such checkpoint, or it cannot be restored.
  """
  fixed = sorted(set(overrides or {}) - set(configuration.RESUMABLE_CHANGES))
  if fixed:
    raise ConfigError(
      f"--config.{fixed[0]} would change what {workdir} was trained with; a run's evaluation and "
      f"tools may change only {', '.join(configuration.RESUMABLE_CHANGES)}."
    )
  config = load_config(workdir, overrides)
  configuration.resolve(config)
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  step = resolve_step(workdir, str(checkpoint), ckpt.all_steps())
  ckpt.close()
  if spec is None:
    dataset = dataset or load_dataset(config.data)
    spec = dataset.spec
  run = Run(workdir, config, build_model(config.model, spec), dataset, step)
  return restore_run(run, mesh, spec) if restore else run


def restore_run(
  run: Run,
  mesh: jax.sharding.Mesh | None = None,
  spec: DataSpec | None = None,
  averaged: bool = True,
) -> Run:
  """`run` with the variables of its checkpoint, replicated over `mesh` (default all devices).

  `spec` describes the data when `run.dataset` is None (see `open_run`). A run trained with
  `optimizer.ema_decay` gets the parameters' moving average unless `averaged` is False.
  """
  config, model = run.config, run.model
  spec = spec or run.dataset.spec
  tx, _ = optimizer.make_optimizer(
    config.optimizer, max(run.step, 1), model.param_optimizers(config.model)
  )
  mesh = mesh or meshes.make_mesh()
  state = jax.jit(lambda r: init_state(model, tx, r, spec), out_shardings=meshes.replicated(mesh))(
    run_keys(config.seed)["init"]
  )
  ckpt = Checkpointer(run.workdir, config.keep_checkpoints)
  state = ckpt.restore(state, run.step)
  ckpt.close()
  model_vars = eval_variables(state) if averaged else variables(state.params, state.model_state)
  return dataclasses.replace(run, model_vars=model_vars)
