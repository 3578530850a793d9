"""Runs a sweep of training runs and reports on it.

  python -m vae_jax.sweep run --config=configs/beta_sweep.py:quick --workdir=runs/beta_sweep \
      [--executor=local|slurm|slurm_local|slurm_debug] [--max_parallel=N] [--vectorize] \
      [--dry_run] [--override=key=value ...]
  python -m vae_jax.sweep report --workdir=runs/beta_sweep

The config file defines `get_config()` and `get_sweep()` (see `vae_jax/sweeps.py`). Each member
trains in `<workdir>/<member name>/` (e.g. `beta=4,seed=1/`), logging to `train.log` there.
`--override` applies to every member (e.g. `--override=num_train_steps=100`). Members whose
results.json is at the configured number of steps are skipped; the others (new, interrupted or
lengthened) run and resume from their newest checkpoint. `run` records the plan in
`<workdir>/sweep.json`; `report` turns the members' results into report.csv, report.md and plots.

`--vectorize` trains the unfinished members in this process as one jitted program (members that
differ only in seed, beta, KL schedule numbers, learning rate or weight decay), each still in its
own folder with its own checkpoints, TensorBoard logs and results.json.

`--executor=slurm` returns once the job array is submitted (preempted or timed-out jobs requeue
themselves); do not `run` the sweep again while its jobs are queued, or unfinished members are
submitted twice.
"""

import json
import os
import shlex
import sys

import ml_collections
from absl import app, flags

from vae_jax import sweep_executors, sweeps
from vae_jax.sweep_executors import Member

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Sweep config file (`path.py` or `path.py:variant`).")
flags.DEFINE_string("workdir", None, "Sweep directory; one subfolder per member.")
flags.DEFINE_enum(
  "executor",
  "local",
  ["local", *sweep_executors.SUBMITIT_CLUSTERS],
  "local: subprocesses here; slurm: a submitit job array; slurm_local / slurm_debug: submitit's "
  "local / debug executors, which run the jobs here (for testing).",
)
flags.DEFINE_integer("max_parallel", 1, "Most members training at once.", lower_bound=1)
flags.DEFINE_bool(
  "vectorize",
  False,
  "Train the unfinished members here as ONE jitted program (they may differ only in seed, beta, "
  "KL schedule numbers, learning rate and weight decay; see vae_jax/vectorized.py).",
)
flags.DEFINE_bool("dry_run", False, "Print each member's name and command; run and write nothing.")
flags.DEFINE_multi_string("override", [], "key=value applied to every member, e.g. seed=3.")
flags.DEFINE_string("slurm_partition", None, "Slurm partition; default the cluster's.")
flags.DEFINE_integer("slurm_time_min", 72 * 60, "Time limit per job in minutes; jobs requeue.")
flags.DEFINE_integer("slurm_gpus_per_node", 1, "GPUs per member.")
flags.DEFINE_integer("slurm_cpus_per_task", 8, "CPUs per member.")
flags.DEFINE_float("slurm_mem_gb", 32.0, "Memory per member in GB.")

COMMANDS = ("run", "report")


def total_steps(config: ml_collections.ConfigDict) -> int | None:
  """The configured run length, or None when it is given in epochs (known only from the data)."""
  return config.num_train_steps if config.num_train_steps > 0 else None


def is_finished(workdir: str, steps: int | None) -> int | None:
  """The step of the member's results.json if it is complete, else None.

  A results.json is written only when training ends; it is complete if its step is the configured
  length (any step when the length is in epochs).
  """
  try:
    with open(os.path.join(workdir, "results.json")) as f:
      step = json.load(f).get("step")
  except (OSError, ValueError):
    return None
  return step if steps is None or step == steps else None


def plan(
  config_path: str, workdir: str, extra: list[str]
) -> tuple[list[Member], dict[str, ml_collections.ConfigDict]]:
  """The sweep's members with their commands, and each member's full config by name.

  Raises:
    sweeps.SweepError: the config, its sweep or an override cannot be used.
  """
  config_path, members = sweeps.load_sweep(config_path)
  shared = dict(sweeps.parse_override(o) for o in extra)
  for key in shared:
    if any(key in m for m in members):
      raise sweeps.SweepError(f"--override={key}=... would replace a value the sweep varies.")
  out, configs = [], {}
  for name, overrides in zip(sweeps.member_names(members), members, strict=True):
    full = overrides | shared
    config = sweeps.load_config(config_path, full)
    member_dir = os.path.join(workdir, name)
    command = [
      sys.executable,
      "-m",
      "vae_jax.main",
      f"--config={config_path}",
      f"--workdir={member_dir}",
      *(f"--config.{k}={sweeps.cli_value(v)}" for k, v in full.items()),
    ]
    out.append(Member(name, overrides, member_dir, command))
    configs[name] = config
  return out, configs


def write_plan(workdir: str, config_path: str, members: list[Member], extra: list[str]) -> None:
  """Writes `<workdir>/sweep.json`: the config, shared overrides and every member's command."""
  record = {
    "config": config_path,
    "cwd": os.getcwd(),
    "overrides": list(extra),
    "members": [
      {
        "name": m.name,
        "overrides": m.overrides,
        "workdir": m.workdir,
        "command": shlex.join(m.command),
      }
      for m in members
    ],
  }
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "sweep.json")
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)


def run() -> None:
  """The `run` command: plans the sweep, skips finished members and launches the rest."""
  if not FLAGS.config:
    sys.exit("error: run needs --config=<sweep config file>")
  workdir = os.path.abspath(FLAGS.workdir)
  try:
    members, configs = plan(FLAGS.config, workdir, FLAGS.override)
  except sweeps.SweepError as e:
    sys.exit(f"error: {e}")
  todo = []
  for m in members:
    step = is_finished(m.workdir, total_steps(configs[m.name]))
    if FLAGS.dry_run:
      status = f"  (finished at step {step}, would be skipped)" if step is not None else ""
      print(f"{m.name}{status}\n  {shlex.join(m.command)}")
    elif step is not None:
      print(f"{m.name}: skipped, results.json is at the configured step {step}", flush=True)
    else:
      todo.append(m)
  if FLAGS.dry_run:
    print(f"{len(members)} members (dry run: nothing was run or written).")
    return
  write_plan(workdir, FLAGS.config, members, FLAGS.override)
  if not todo:
    print(f"All {len(members)} members are finished.")
    return
  if FLAGS.vectorize:
    run_vectorized(todo, configs)
    print(f"{len(todo)} members trained as one program, {len(members) - len(todo)} skipped.")
    return
  if FLAGS.executor == "local":
    failed = sweep_executors.run_local(todo, os.getcwd(), FLAGS.max_parallel)
  else:
    resources = sweep_executors.SlurmResources(
      partition=FLAGS.slurm_partition,
      time_min=FLAGS.slurm_time_min,
      gpus_per_node=FLAGS.slurm_gpus_per_node,
      cpus_per_task=FLAGS.slurm_cpus_per_task,
      mem_gb=FLAGS.slurm_mem_gb,
    )
    folder = os.path.join(workdir, "submitit")
    failed = sweep_executors.run_submitit(
      todo, os.getcwd(), FLAGS.executor, folder, resources, FLAGS.max_parallel
    )
    if FLAGS.executor == "slurm":
      print(f"Submitted {len(todo)} members; submitit files in {folder}.")
      return
  skipped = len(members) - len(todo)
  print(f"{len(todo) - len(failed)} members trained, {skipped} skipped, {len(failed)} failed.")
  if failed:
    for m in failed:
      print(f"failed: {m.name}, log: {m.log_path}")
    sys.exit(f"error: {len(failed)} of {len(todo)} members failed (logs listed above)")


def run_vectorized(todo: list[Member], configs: dict[str, ml_collections.ConfigDict]) -> None:
  """Trains the unfinished members in this process as one vectorized program."""
  import tensorflow as tf

  from vae_jax import vectorized
  from vae_jax.checkpointing import CheckpointError
  from vae_jax.config_checks import ConfigError
  from vae_jax.data import DataError

  tf.config.set_visible_devices([], "GPU")  # TF only reads data; keep it off the accelerators.
  try:
    vectorized.train_members([configs[m.name] for m in todo], [m.workdir for m in todo])
  except (ConfigError, DataError, CheckpointError) as e:
    sys.exit(f"error: {e}")


def report() -> None:
  """The `report` command: writes report.csv, report.md and the plots into the workdir."""
  from vae_jax import sweep_report  # matplotlib only when reporting

  try:
    written = sweep_report.write_report(FLAGS.workdir)
  except sweep_report.ReportError as e:
    sys.exit(f"error: {e}")
  for path in written:
    print(f"wrote {path}")


def main(argv: list[str]) -> None:
  """Dispatches to `run` or `report`."""
  if len(argv) != 2 or argv[1] not in COMMANDS:
    sys.exit(f"error: expected one command, run or report; got {argv[1:]}")
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required")
  if argv[1] == "run":
    run()
  else:
    report()


if __name__ == "__main__":
  app.run(main)
