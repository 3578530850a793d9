"""Reopens a finished (or running) training run for evaluation and tools.

`load_run(workdir)` reads `<workdir>/config.json`, rebuilds the model and restores a checkpoint, so
`vae_jax.evaluate` and `vae_jax.tools` see exactly what training saved.
"""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import ml_collections

from vae_jax import optim, parallel, steps
from vae_jax.checkpointing import Checkpointer, CheckpointError
from vae_jax.data import Dataset, load_dataset
from vae_jax.models import build_model

EVAL_HISTORY = "eval_history.jsonl"


@dataclasses.dataclass
class Run:
  """A restored run.

  Attributes:
    workdir: the run directory.
    config: the run's config (from config.json).
    model: the Flax model.
    model_vars: its variables (`{'params': ..., **model_state}`) at `step`.
    dataset: the run's dataset.
    step: the restored checkpoint's step.
  """

  workdir: str
  config: ml_collections.ConfigDict
  model: nn.Module
  model_vars: dict
  dataset: Dataset
  step: int


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with.

  Raises:
    CheckpointError: the workdir has no config.json (it is not a training run).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir} is not a training run: {path} does not exist.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def record_eval(workdir: str, step: int, metrics: dict) -> None:
  """Appends one evaluation's loss to the run's history (used to find the best checkpoint)."""
  with open(os.path.join(workdir, EVAL_HISTORY), "a") as f:
    f.write(json.dumps({"step": step, "eval_loss": float(metrics["loss"])}) + "\n")


def _best_step(workdir: str, saved: list[int]) -> int:
  path = os.path.join(workdir, EVAL_HISTORY)
  history = []
  if os.path.exists(path):
    with open(path) as f:
      history = [json.loads(line) for line in f if line.strip()]
  candidates = [h for h in history if h["step"] in saved]
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


def load_run(
  workdir: str,
  checkpoint: str = "latest",
  *,
  mesh: jax.sharding.Mesh | None = None,
  dataset: Dataset | None = None,
  config_overrides: dict | None = None,
) -> Run:
  """Restores a run's model and variables from its Orbax checkpoint.

  Args:
    workdir: the run directory (written by `vae_jax.main`).
    checkpoint: 'latest', 'best' (lowest recorded eval loss) or a step number.
    mesh: where the variables go (replicated); default all local devices.
    dataset: the dataset; default `load_dataset(config.data)`.
    config_overrides: flat {'data.manual_dir': ...} changes that do not alter the model (e.g. where
      the data lives on this machine).

  Raises:
    CheckpointError: the workdir is not a run, has no such checkpoint, or it cannot be restored.
  """
  config = load_config(workdir)
  if config_overrides:
    config.update_from_flattened_dict(config_overrides)
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  step = resolve_step(workdir, checkpoint, ckpt.all_steps())
  dataset = dataset or load_dataset(config.data)
  model = build_model(config.model, dataset.image_shape, dataset.num_classes)
  tx, _ = optim.make_optimizer(config.optimizer, max(step, 1))
  mesh = mesh or parallel.make_mesh()
  state = jax.jit(
    lambda r: steps.init_state(model, tx, r, dataset.image_shape, dataset.num_classes),
    out_shardings=parallel.replicated(mesh),
  )(jax.random.key(0))
  state = ckpt.restore(state, step)
  ckpt.close()
  model_vars = steps.variables(state.params, state.model_state)
  return Run(workdir, config, model, model_vars, dataset, step)
