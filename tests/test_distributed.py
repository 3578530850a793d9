"""When a command joins JAX's distributed runtime, and its one-line errors (no processes started;
the multi-process runs themselves are in test_multiprocess.py)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vae_jax import distributed
from vae_jax.errors import ConfigError

SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0"}


def _clear_slurm(monkeypatch):
  for var in (*SLURM, "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
    monkeypatch.delenv(var, raising=False)


def test_one_process_does_not_join(monkeypatch):
  _clear_slurm(monkeypatch)
  assert not distributed.join("auto")
  assert not distributed.join("auto", coordinator_address="h:1", num_processes=1, process_id=0)
  assert not distributed.join("off", coordinator_address="h:1", num_processes=2, process_id=1)


def test_slurm_tasks_count_only_inside_a_job_step(monkeypatch):
  _clear_slurm(monkeypatch)
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.slurm_tasks() == 1  # sbatch's script itself is one process.
  for k, v in SLURM.items():
    monkeypatch.setenv(k, v)
  assert distributed.slurm_tasks() == 4
  monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
  assert distributed.slurm_tasks() == 2


@pytest.mark.parametrize(
  "values, message",
  [
    ({"num_processes": 2}, "--num_processes needs --coordinator_address and --process_id"),
    ({"coordinator_address": "h:1", "process_id": 0}, "needs --num_processes"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "must be in [0, 2)"),
  ],
)
def test_incomplete_coordinator_flags_are_a_config_error(values, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
    distributed.join("auto", **values)


def test_the_command_line_says_so_in_one_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "vae_jax.main",
      "--config=configs/beta4.py",
      f"--workdir={workdir}",
      "--num_processes=2",
    ],
    cwd=REPO,
    env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
    "error: --num_processes needs --coordinator_address and --process_id too (a plain cluster "
    "names the coordinator, the process count and this process's index)."
  ]
  assert not workdir.exists()
