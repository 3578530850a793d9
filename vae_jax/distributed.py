"""Joining JAX's multi-controller runtime when a command is one of several processes.

Every command line (`main`, `evaluate`, `tools`, `sweep`) calls `join()` before JAX starts its
backends. It calls `jax.distributed.initialize` when

- `--coordinator_address`, `--num_processes` and `--process_id` say so (a plain cluster, or
  several processes on one machine), or
- Slurm started this process as one of several tasks (`srun` / `sbatch --ntasks>1`), or
- `--distributed=on` (a TPU pod slice, where JAX finds its peers itself),

and otherwise does nothing, so a single process runs exactly as before. On CPU the processes talk
through gloo. Processes other than 0 log warnings and errors only, to stderr, and print nothing
to stdout; process 0 writes the run's files.
"""

import os
import sys

import jax
from absl import flags, logging

from vae_jax.errors import ConfigError

flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "Join JAX's distributed runtime: auto (when the flags below are given or Slurm runs several "
  "tasks), on (always; JAX detects Slurm, TPU pod slices and other clusters itself), off (never).",
)
flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0, for a cluster JAX does not detect."
)
flags.DEFINE_integer("num_processes", None, "How many processes take part.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "This process's index, 0 to num_processes - 1.")

_EXPLICIT = ("coordinator_address", "num_processes", "process_id")


def slurm_tasks() -> int:
  """How many tasks Slurm started this process's job step with (1 outside an `srun` step)."""
  if "SLURM_STEP_NODELIST" not in os.environ or "SLURM_PROCID" not in os.environ:
    return 1
  return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def _explicit(values: dict) -> dict | None:
  """The explicit coordinator arguments, or None; raises `ConfigError` when some are missing."""
  given = [k for k in _EXPLICIT if values[k] is not None]
  if not given:
    return None
  missing = [f"--{k}" for k in _EXPLICIT if values[k] is None]
  if missing:
    raise ConfigError(
      f"--{given[0]} needs {' and '.join(missing)} too (a plain cluster names the coordinator, "
      "the process count and this process's index)."
    )
  n, i = values["num_processes"], values["process_id"]
  if not 0 <= i < n:
    raise ConfigError(f"--process_id={i} must be in [0, {n}) for --num_processes={n}.")
  return {"coordinator_address": values["coordinator_address"], "num_processes": n, "process_id": i}


def join(mode: str = "auto", **values) -> bool:
  """Joins the distributed runtime when the flags or the environment ask for it.

  Args:
    mode: `auto`, `on` or `off` (see `--distributed`).
    **values: `coordinator_address`, `num_processes`, `process_id` (None when not given).

  Returns:
    Whether this process joined (and therefore may be one of several).

  Raises:
    ConfigError: an incomplete or inconsistent set of coordinator flags.
  """
  values = {k: values.get(k) for k in _EXPLICIT}
  explicit = _explicit(values)
  if mode == "off":
    return False
  if mode == "auto" and explicit is None and slurm_tasks() <= 1:
    return False
  if explicit is not None and explicit["num_processes"] == 1:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**(explicit or {}))
  if jax.process_index() > 0:
    logging.set_verbosity(logging.WARNING)
    # Reports are process 0's to print; this also silences gloo's C++ connection notices here.
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
  logging.info(
    "Process %d of %d, %d of %d devices here.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def join_from_flags() -> bool:
  """`join` with the command line's `--distributed` and coordinator flags."""
  f = flags.FLAGS
  return join(f.distributed, **{k: f[k].value for k in _EXPLICIT})
