"""Runs a sweep of training runs and reports on it.

  python -m vae_jax.sweep run --config=configs/beta_sweep.py:quick --workdir=runs/beta_sweep \
      [--executor=local|slurm|slurm_local|slurm_debug] [--max_parallel=N] [--vectorize] \
      [--dry_run] [--config.<key>=<value> ...]
  python -m vae_jax.sweep report --workdir=runs/beta_sweep

The config file defines `get_config()` and `get_sweep()` (see `vae_jax/sweep/spec.py`). Each member
trains in `<workdir>/<member name>/` (e.g. `beta=4,seed=1/`), logging to `train.log` there.
`--config.<key>=<value>` applies to every member, as it would to one run (e.g.
`--config.num_train_steps=100`). Members whose results.json is at the configured length are
skipped; the others (new, interrupted or lengthened) run and resume from their newest checkpoint.
`run` records the plan in `<workdir>/sweep.json`; `report` turns the members' results into
report.csv, report.md and plots.

`--vectorize` trains the unfinished members in this process as one jitted program (members that
differ only in seed, beta, KL schedule numbers, learning rate or weight decay), each still in its
own folder with its own checkpoints, TensorBoard logs and results.json.

`--executor=slurm` returns once the job array is submitted (preempted or timed-out jobs requeue
themselves); do not `run` the sweep again while its jobs are queued, or unfinished members are
submitted twice.
"""

import os
import shlex

import jax
from absl import flags
from ml_collections import config_flags

from vae_jax import cli
from vae_jax.sweep import executors, launch
from vae_jax.training import preemption

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Sweep config file (`path.py` or `path.py:variant`).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Sweep directory; one subfolder per member.")
flags.DEFINE_enum(
  "executor",
  "local",
  ["local", *executors.SUBMITIT_CLUSTERS],
  "local: subprocesses here; slurm: a submitit job array; slurm_local / slurm_debug: submitit's "
  "local / debug executors, which run the jobs here (for testing).",
)
flags.DEFINE_integer("max_parallel", 1, "Most members training at once.", lower_bound=1)
flags.DEFINE_bool(
  "vectorize",
  False,
  "Train the unfinished members here as ONE jitted program (they may differ only in seed, beta, "
  "KL schedule numbers, learning rate and weight decay; see vae_jax/training/vectorized.py).",
)
flags.DEFINE_bool("dry_run", False, "Print each member's name and command; run and write nothing.")
flags.DEFINE_string("slurm_partition", None, "Slurm partition; default the cluster's.")
flags.DEFINE_integer("slurm_time_min", 72 * 60, "Time limit per job in minutes; jobs requeue.")
flags.DEFINE_integer(
  "slurm_nodes",
  1,
  "Nodes per member: one task (one JAX process) per node, training data parallel over all of them.",
  lower_bound=1,
)
flags.DEFINE_integer("slurm_gpus_per_node", 1, "GPUs per member on each of its nodes.")
flags.DEFINE_integer("slurm_cpus_per_task", 8, "CPUs per member.")
flags.DEFINE_float("slurm_mem_gb", 32.0, "Memory per member in GB.")

COMMANDS = ("run", "report")


def run_sweep() -> None:
  """The `run` command: plans the sweep, skips finished members and launches the rest."""
  if FLAGS.config is None:
    cli.fail("run needs --config=<sweep config file>")
  workdir = os.path.abspath(FLAGS.workdir)
  config_path = config_flags.get_config_filename(FLAGS["config"])
  shared = config_flags.get_override_values(FLAGS["config"])
  members, configs = launch.plan(config_path, workdir, shared)
  todo = []
  for m in members:
    step = launch.is_finished(m.workdir, configs[m.name])
    if FLAGS.dry_run:
      status = f"  (finished at step {step}, would be skipped)" if step is not None else ""
      print(f"{m.name}{status}\n  {shlex.join(m.command)}")
    elif step is not None:
      print(f"{m.name}: skipped, results.json is at the configured length (step {step})")
    else:
      todo.append(m)
  if FLAGS.dry_run:
    print(f"{len(members)} members (dry run: nothing was run or written).")
    return
  launch.write_plan(workdir, config_path, members, shared)
  if not todo:
    print(f"All {len(members)} members are finished.")
    return
  if jax.process_count() > 1 and not FLAGS.vectorize:
    cli.fail(
      "a sweep run by several processes trains its members together: add --vectorize (or "
      "launch it from one process with --executor=slurm --slurm_nodes=N)"
    )
  if FLAGS.vectorize:
    launch.run_vectorized(todo, configs)
    print(f"{len(todo)} members trained as one program, {len(members) - len(todo)} skipped.")
    return
  _launch(todo, workdir, len(members))


def _launch(todo: list, workdir: str, num_members: int) -> None:
  """Runs (or submits) the unfinished members with the chosen executor."""
  if FLAGS.executor == "local":
    with executors.forwarding_signals(preemption.parse_signals(preemption.DEFAULT_SIGNALS)):
      failed = executors.run_local(todo, os.getcwd(), FLAGS.max_parallel)
  else:
    resources = executors.SlurmResources(
      partition=FLAGS.slurm_partition,
      nodes=FLAGS.slurm_nodes,
      time_min=FLAGS.slurm_time_min,
      gpus_per_node=FLAGS.slurm_gpus_per_node,
      cpus_per_task=FLAGS.slurm_cpus_per_task,
      mem_gb=FLAGS.slurm_mem_gb,
    )
    folder = os.path.join(workdir, "submitit")
    failed = executors.run_submitit(
      todo, os.getcwd(), FLAGS.executor, folder, resources, FLAGS.max_parallel
    )
    if FLAGS.executor == "slurm":
      print(f"Submitted {len(todo)} members; submitit files in {folder}.")
      return
  skipped = num_members - len(todo)
  print(f"{len(todo) - len(failed)} members trained, {skipped} skipped, {len(failed)} failed.")
  if failed:
    for m in failed:
      print(f"failed: {m.name}, log: {m.log_path}")
    cli.fail(f"{len(failed)} of {len(todo)} members failed (logs listed above)")


def report() -> None:
  """The `report` command: writes report.csv, report.md and the plots into the workdir."""
  from vae_jax.sweep import report as sweep_report  # matplotlib only when reporting

  for path in sweep_report.write_report(FLAGS.workdir):
    print(f"wrote {path}")


def main(argv: list[str]) -> None:
  """Dispatches to `run` or `report`."""
  if len(argv) != 2 or argv[1] not in COMMANDS:
    cli.fail(f"expected one command, run or report; got {argv[1:]}")
  if not FLAGS.workdir:
    cli.fail("--workdir is required")
  if argv[1] == "run":
    run_sweep()
  else:
    report()


def run() -> None:
  """Console-script entry point (`vae-jax-sweep`)."""
  cli.run(main)


if __name__ == "__main__":
  run()
