"""Planning a sweep and launching its members: commands, finished members, the vectorized path.

`plan(config_path, workdir, shared)` turns a sweep config file (see `spec`) into members, each with
its folder and its `python -m vae_jax.main` command; `is_finished` reads a member's results.json;
`write_plan` records the plan in `<workdir>/sweep.json`; `run_vectorized` trains members in this
process as one program.
"""

import os
import shlex
import sys

import ml_collections

from vae_jax import runs
from vae_jax.sweep import spec
from vae_jax.sweep.executors import Member


def is_finished(workdir: str, config: ml_collections.ConfigDict) -> int | None:
  """The step of the member's results.json if it finished the length `config` asks for, else None.

  A results.json is written only when training ends and records the length it was asked for
  (`target`): a member whose config now asks for more steps or epochs is not finished. A
  results.json of an older version (no `target`) counts only when the length is in steps.
  """
  results = runs.read_results(workdir)
  if results is None:
    return None
  wanted = runs.run_length(config)
  if "target" in results:
    return results["step"] if results["target"] == wanted else None
  steps = wanted.get("num_train_steps")
  return results.get("step") if steps is not None and results.get("step") == steps else None


def plan(
  config_path: str, workdir: str, shared: dict
) -> tuple[list[Member], dict[str, ml_collections.ConfigDict]]:
  """The sweep's members with their commands, and each member's full config by name.

  Args:
    config_path: the sweep config file (`path.py` or `path.py:variant`).
    workdir: the sweep directory.
    shared: flat overrides applied to every member (`--config.<key>=<value>` on the command line).

  Raises:
    spec.SweepError: the config, its sweep or an override cannot be used.
  """
  config_path, members = spec.load_sweep(config_path)
  for key in shared:
    if any(key in m for m in members):
      raise spec.SweepError(f"--config.{key}=... would replace a value the sweep varies.")
  out, configs = [], {}
  for name, overrides in zip(spec.member_names(members), members, strict=True):
    full = overrides | shared
    config = spec.load_config(config_path, full)
    member_dir = os.path.join(workdir, name)
    command = [
      sys.executable,
      "-m",
      "vae_jax.main",
      f"--config={config_path}",
      f"--workdir={member_dir}",
      *(f"--config.{k}={spec.cli_value(v)}" for k, v in full.items()),
    ]
    out.append(Member(name, overrides, member_dir, command))
    configs[name] = config
  return out, configs


def write_plan(workdir: str, config_path: str, members: list[Member], shared: dict) -> None:
  """Writes `<workdir>/sweep.json`: the config, shared overrides and every member's command."""
  record = {
    "config": config_path,
    "cwd": os.getcwd(),
    "overrides": {k: spec.cli_value(v) for k, v in shared.items()},
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
  runs.write_json(os.path.join(workdir, "sweep.json"), record)


def run_vectorized(todo: list[Member], configs: dict[str, ml_collections.ConfigDict]) -> None:
  """Trains the unfinished members in this process as one vectorized program."""
  from vae_jax import cli
  from vae_jax.training import vectorized

  cli.hide_gpus_from_tensorflow()
  vectorized.train_members([configs[m.name] for m in todo], [m.workdir for m in todo])
