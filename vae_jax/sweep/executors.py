"""Launchers for sweep members: local subprocesses, or a Slurm job array through submitit.

Each member is one `python -m vae_jax.main` command with its own `--workdir`; its stdout and stderr
are appended to `<workdir>/train.log`. A member that is started again resumes from the newest Orbax
checkpoint in its workdir, which is what makes re-running a sweep and requeueing a job safe.
"""

import concurrent.futures
import contextlib
import dataclasses
import datetime
import glob
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

import submitit

# submitit cluster behind each --executor value that goes through submitit.
SUBMITIT_CLUSTERS = {"slurm": "slurm", "slurm_local": "local", "slurm_debug": "debug"}


@dataclasses.dataclass(frozen=True)
class Member:
  """One training run of a sweep.

  Attributes:
    name: folder name of the member inside the sweep workdir.
    overrides: the member's config overrides (dotted keys).
    workdir: the member's `--workdir`.
    command: the full training command line.
  """

  name: str
  overrides: dict[str, Any]
  workdir: str
  command: list[str]

  @property
  def log_path(self) -> str:
    """Where the member's stdout and stderr go.

    Process i > 0 of a multi-node member writes its own `train.task<i>.log`.
    """
    task = int(os.environ.get("SLURM_PROCID", "0")) if "SLURM_STEP_NODELIST" in os.environ else 0
    return os.path.join(self.workdir, "train.log" if task == 0 else f"train.task{task}.log")


_RUNNING: set[subprocess.Popen] = set()
_STOPPING = threading.Event()
NOT_STARTED = -1  # run_member's code for a member a stop signal kept from starting.


@contextlib.contextmanager
def forwarding_signals(signals: Sequence[int]):
  """While active, a stop signal is passed on to the running members and no new one starts.

  Each member then saves a checkpoint and exits (see `training.preemption`); re-running the
  sweep resumes them. A second signal exits at once.
  """

  def forward(signum, frame):
    del frame
    if _STOPPING.is_set():
      os._exit(128 + signum)
    _STOPPING.set()
    print(f"Received signal {signum}: stopping the running members.", flush=True)
    for proc in list(_RUNNING):
      proc.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in signals}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def tpu_host() -> bool:
  """Whether this machine has TPU chips (only one process may open them)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def parallel_plan(max_parallel: int) -> tuple[int, dict[str, str]]:
  """How many members may train at once here, and the environment they share the devices with.

  Several JAX processes on one GPU each preallocate 75% of its memory: members get an equal share
  (XLA_PYTHON_CLIENT_MEM_FRACTION) unless the user set one. A TPU host's chips open in one process
  only: members run one at a time there (or use --vectorize to train them as one program).
  """
  if max_parallel == 1:
    return 1, {}
  if tpu_host():
    print("TPU host: running one member at a time (use --vectorize to train them together).")
    return 1, {}
  share = f"{0.9 / max_parallel:.3f}"
  return max_parallel, {
    "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", share)
  }


def run_member(member: Member, cwd: str, env: dict[str, str] | None = None) -> int:
  """Runs the member's command in `cwd`, appending its output to its train.log.

  Args:
    member: the member.
    cwd: directory to run its command in.
    env: environment variables added to this process's for the member.

  Returns:
    The command's exit code (`NOT_STARTED` once a stop signal arrived).
  """
  if _STOPPING.is_set():
    return NOT_STARTED
  os.makedirs(member.workdir, exist_ok=True)
  with open(member.log_path, "a") as log:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    log.write(f"=== {now} {shlex.join(member.command)}\n")
    log.flush()
    proc = subprocess.Popen(
      member.command, cwd=cwd, env=os.environ | (env or {}), stdout=log, stderr=subprocess.STDOUT
    )
    _RUNNING.add(proc)
    try:
      return proc.wait()
    finally:
      _RUNNING.discard(proc)


def run_local(members: Sequence[Member], cwd: str, max_parallel: int) -> list[Member]:
  """Runs the members as subprocesses, at most `max_parallel` at a time.

  Returns:
    The members that failed.
  """
  failed = []
  max_parallel, env = parallel_plan(max_parallel)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max_parallel) as pool:
    futures = {pool.submit(run_member, m, cwd, env): m for m in members}
    print(f"Running {len(members)} members, at most {max_parallel} at a time.", flush=True)
    for future in concurrent.futures.as_completed(futures):
      member, code = futures[future], future.result()
      if code:
        failed.append(member)
        print(f"{member.name}: {_describe(code)}, log: {member.log_path}", flush=True)
      else:
        print(f"{member.name}: finished", flush=True)
  return failed


def _describe(code: int) -> str:
  if code == NOT_STARTED:
    return "not started (the sweep was stopped)"
  if code > 128:
    return f"stopped by signal {code - 128} after saving; it resumes when the sweep runs again"
  return f"FAILED (exit code {code})"


class MemberJob(submitit.helpers.Checkpointable):
  """A submitit job that trains one member; requeued as itself on preemption or timeout.

  Args:
    member: the member to train.
    cwd: directory to run its command in (the repository root, where `configs/` imports work).
  """

  def __init__(self, member: Member, cwd: str):
    self.member = member
    self.cwd = cwd

  def __call__(self) -> str:
    """Trains the member; raises if its command fails. Returns its workdir."""
    code = run_member(self.member, self.cwd)
    if code:
      raise RuntimeError(
        f"{self.member.name} failed with exit code {code}; log: {self.member.log_path}"
      )
    return self.member.workdir

  def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
    """Resubmits the same member; it resumes from the Orbax checkpoints in its workdir."""
    return submitit.helpers.DelayedSubmission(MemberJob(self.member, self.cwd))


@dataclasses.dataclass(frozen=True)
class SlurmResources:
  """What each member's job asks for; only `time_min` and the GPU count matter off Slurm."""

  partition: str | None
  nodes: int
  time_min: int
  gpus_per_node: int
  cpus_per_task: int
  mem_gb: float


def run_submitit(
  members: Sequence[Member],
  cwd: str,
  executor: str,
  folder: str,
  resources: SlurmResources,
  max_parallel: int,
) -> list[Member]:
  """Submits the members as one job array with submitit.

  With `executor='slurm'` this returns once the array is submitted; `slurm_local` (local
  processes) and `slurm_debug` (in this process) run for real without a cluster and are waited for.

  Args:
    members: members to run.
    cwd: directory to run their commands in.
    executor: `slurm`, `slurm_local` or `slurm_debug`.
    folder: submitit's folder for job scripts, pickles and logs.
    resources: per-job resources.
    max_parallel: most array tasks running at once (Slurm only; local jobs all start at once).

  Returns:
    The members that failed (always empty for `slurm`, whose jobs are not waited for).
  """
  ex = submitit.AutoExecutor(folder=folder, cluster=SUBMITIT_CLUSTERS[executor])
  ex.update_parameters(
    name="vae_jax_sweep",
    timeout_min=resources.time_min,
    nodes=resources.nodes,
    tasks_per_node=1,
    gpus_per_node=resources.gpus_per_node,
    cpus_per_task=resources.cpus_per_task,
    mem_gb=resources.mem_gb,
    slurm_partition=resources.partition,
    slurm_array_parallelism=max_parallel,
  )
  with ex.batch():
    jobs = [ex.submit(MemberJob(m, cwd)) for m in members]
  for member, job in zip(members, jobs, strict=True):
    print(f"{member.name}: submitted as job {job.job_id}, log: {member.log_path}", flush=True)
  if executor == "slurm":
    return []
  failed = []
  for member, job in zip(members, jobs, strict=True):
    try:
      job.result()
      print(f"{member.name}: finished", flush=True)
    except Exception as e:  # submitit re-raises the job's failure with its traceback
      failed.append(member)
      last_line = str(e).strip().splitlines()[-1:] or [type(e).__name__]
      print(f"{member.name}: FAILED ({last_line[0]}), log: {member.log_path}", flush=True)
  return failed
