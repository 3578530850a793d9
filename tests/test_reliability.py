"""Every failure ends in one `error:` line and loses nothing; SIGTERM saves and the run resumes.

The command lines run as subprocesses, as a user meets them. Full-disk and read-only cases mount a
small tmpfs (skipped, with the reason, where the test cannot mount); the permission case drops to
the `nobody` user with setpriv (skipped where it cannot).
"""

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import REPO
from vae_jax import runs
from vae_jax.errors import WriteError
from vae_jax.training import preemption

TINY = helpers.TINY_RUN


def _env() -> dict:
  env = dict(os.environ)
  env.pop("JAX_NUM_CPU_DEVICES", None)
  return env


def _cli(module: str, *args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
    **kwargs,
  )


def _one_error_line(proc: subprocess.CompletedProcess, *expected: str) -> str:
  """Asserts a non-zero exit, no traceback, and exactly one `error:` line holding `expected`."""
  assert proc.returncode != 0, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-2000:]
  for text in expected:
    assert text in errors[0], errors[0]
  return errors[0]


def _snapshot(path: str) -> dict[str, bytes]:
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = f.read()
  return out


@pytest.mark.parametrize(
  "args,expected",
  [
    (["--config.model.no_such_key=3"], ["--config.model.no_such_key names no field"]),
    (["--config.nope.x=1"], ["--config.nope.x names no field"]),
    (["--config.seed=abc"], ["--config.seed=abc", "invalid literal for int()"]),
    (["--config.model.hidden_sizes=(16,'a')"], ["model.hidden_sizes", "whole numbers"]),
    (["--config=configs/nope.py"], ["config file configs/nope.py not found"]),
    (["--config=configs/beta4.py:fast"], ["configs/beta4.py:fast", "Unknown beta4 variant"]),
    (["--stop_signals=TERM,NOPE"], ["--stop_signals", "SIGNOPE"]),
  ],
)
def test_flag_and_config_file_errors_are_one_line_before_anything_is_written(
  tmp_path, args, expected
):
  workdir = tmp_path / "w"
  proc = _cli("vae_jax.main", *TINY, f"--workdir={workdir}", *args)
  _one_error_line(proc, *expected)
  assert not workdir.exists()


def test_a_broken_config_file_is_one_line(tmp_path):
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n")
  proc = _cli("vae_jax.main", f"--config={broken}", f"--workdir={tmp_path / 'w'}")
  _one_error_line(proc, f"config file {broken}", "SyntaxError")


@pytest.mark.parametrize(
  "module,args,expected",
  [
    ("vae_jax.evaluate", ["--workdir={run}", "--config.model.latent_dim=3"], ["would change"]),
    ("vae_jax.evaluate", ["--workdir={run}", "--iw_samples=x"], ["--iw_samples"]),
    ("vae_jax.tools", ["sample", "--workdir={run}", "--num=many"], ["--num"]),
    ("vae_jax.tools", ["sample", "--workdir={run}", "--bogus=1"], ["Unknown command line flag"]),
    ("vae_jax.sweep", ["run", "--workdir={run}", "--config=configs/nope.py"], ["not found"]),
    (
      "vae_jax.sweep",
      ["run", "--workdir={tmp}/s", "--config=configs/beta_sweep.py", "--config.objective.bogus=1"],
      ["--config.objective.bogus names no"],
    ),
  ],
)
def test_other_commands_report_flag_errors_in_one_line(tmp_path, module, args, expected):
  run = tmp_path / "run"
  run.mkdir()
  (run / "keep.txt").write_text("x")
  args = [a.format(run=run, tmp=tmp_path) for a in args]
  _one_error_line(_cli(module, *args), *expected)
  assert sorted(os.listdir(tmp_path)) == ["run"] and os.listdir(run) == ["keep.txt"]


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "file"
  path.write_text("mine")
  proc = _cli("vae_jax.main", *TINY, f"--workdir={path}", "--config.num_train_steps=4")
  _one_error_line(proc, f"--workdir={path} is a file")
  assert path.read_text() == "mine"


@contextlib.contextmanager
def _tmpfs(size: str, read_only: bool = False):
  """A fresh tmpfs mounted on a temporary directory, or a skip when this machine cannot mount."""
  where = tempfile.mkdtemp(prefix="vae_jax_tmpfs_")
  options = f"size={size}" + (",ro" if read_only else "")
  mounted = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", options, "tmpfs", where], capture_output=True, text=True
  )
  if mounted.returncode != 0:
    os.rmdir(where)
    pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
  try:
    yield where
  finally:
    subprocess.run(["umount", "-l", where], capture_output=True)
    os.rmdir(where)


def test_a_read_only_workdir_is_one_line(tmp_path):
  with _tmpfs("1M", read_only=True) as ro:
    proc = _cli("vae_jax.main", *TINY, f"--workdir={ro}/run", "--config.num_train_steps=4")
    _one_error_line(proc, "is not writable", "Read-only file system")


def test_a_workdir_without_write_permission_is_one_line(tmp_path):
  if shutil.which("setpriv") is None or os.geteuid() != 0:
    pytest.skip("needs root and setpriv to run the command as another user")
  locked = tmp_path / "locked"
  locked.mkdir()
  os.chmod(tmp_path, 0o755)
  os.chmod(locked, 0o555)
  drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
  command = [*drop, sys.executable, "-m", "vae_jax.main", *TINY, f"--workdir={locked}/run"]
  env = _env() | {"HOME": str(tmp_path)}
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  if "Permission denied" in proc.stderr and "is not writable" not in proc.stderr:
    pytest.skip("the nobody user cannot run this Python installation")
  _one_error_line(proc, "is not writable", "Permission denied")


def _fill(path: str) -> None:
  with open(os.path.join(path, "filler"), "wb") as f, contextlib.suppress(OSError):
    while True:
      f.write(b"\0" * 65536)
      f.flush()


def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoints(tmp_path):
  # Each checkpoint of this model is ~1.3 MB: two fit in 3 MB beside the events, the third not.
  steps = ["--config.num_train_steps=40", "--config.checkpoint_every_steps=10"]
  steps += ["--config.eval_every_steps=20", "--config.log_every_steps=10"]
  with _tmpfs("3M") as disk:
    run = os.path.join(disk, "run")
    proc = _cli("vae_jax.main", *TINY, *steps, f"--workdir={run}")
    line = _one_error_line(proc, "could not write checkpoint", "No space left on device")
    saved = sorted(int(s) for s in helpers.checkpoint_steps(run))
    assert saved and f"The earlier checkpoints {saved} are intact" in line
    left = os.listdir(os.path.join(run, "checkpoints"))
    assert not [d for d in left if "tmp" in d], left  # No partial checkpoint for resume to take.
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
  proc = _cli("vae_jax.evaluate", f"--workdir={copy}", "--metrics=elbo")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"step {saved[-1]}" in proc.stdout


def test_a_full_disk_before_the_first_write_is_one_line():
  with _tmpfs("1M") as disk:
    _fill(disk)
    run = os.path.join(disk, "run")
    proc = _cli("vae_jax.main", *TINY, "--config.num_train_steps=4", f"--workdir={run}")
    _one_error_line(proc, f"{run}/config.json", "No space left on device")


@pytest.mark.slow
def test_a_full_disk_for_tool_outputs_is_one_line_and_keeps_earlier_outputs(tmp_path):
  run = str(tmp_path / "run")
  proc = _cli("vae_jax.main", *TINY, "--config.num_train_steps=4", f"--workdir={run}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _cli("vae_jax.tools", "sample", f"--workdir={run}").returncode == 0
  with _tmpfs("4M") as disk:
    moved = os.path.join(disk, "run")
    shutil.copytree(run, moved)
    before = _snapshot(moved)
    _fill(disk)
    proc = _cli("vae_jax.tools", "reconstruct", f"--workdir={moved}")
    _one_error_line(proc, "could not write", "No space left on device")
    after = _snapshot(moved)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and k.startswith("tools/reconstruct")]


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
  """Reads proc's stderr until a line holds `text`; returns the lines read."""
  lines, start = [], time.time()
  while time.time() - start < timeout:
    line = proc.stderr.readline()
    if not line:
      break
    lines.append(line)
    if text in line:
      return lines
  raise AssertionError(f"{text!r} never appeared:\n{''.join(lines[-20:])}")


LONG = [*TINY, "--config.num_train_steps=1500", "--config.steps_per_execution=4"]
LONG += ["--config.log_every_steps=100", "--config.eval_every_steps=1500"]
LONG += ["--config.checkpoint_every_steps=1500"]


@pytest.mark.parametrize(
  "sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)]
)
def test_a_stop_signal_saves_and_the_same_command_resumes_bitwise(tmp_path, sig):
  alone, stopped = str(tmp_path / "alone"), str(tmp_path / "stopped")
  assert _cli("vae_jax.main", *LONG, f"--workdir={alone}").returncode == 0
  command = [sys.executable, "-m", "vae_jax.main", *LONG, f"--workdir={stopped}"]
  proc = subprocess.Popen(command, cwd=REPO, env=_env(), stderr=subprocess.PIPE, text=True)
  _wait_for(proc, "Training 1500 steps")
  time.sleep(random.uniform(0.5, 3.0))
  proc.send_signal(sig)
  err = proc.stderr.read()
  assert proc.wait(timeout=120) == 128 + sig, err[-2000:]
  assert "Traceback" not in err
  step = int(err.split(" at step ")[1].split(";")[0])
  assert 0 < step < 1500 and "Run the same command to continue" in err
  assert helpers.checkpoint_steps(stopped) == [str(step)]
  resumed = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"Resumed from {stopped}/checkpoints at step {step}" in resumed.stderr
  a, b = helpers.checkpoint_params(alone, 1500), helpers.checkpoint_params(stopped, 1500)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_the_first_signal_requests_a_stop_and_a_second_exits_at_once(monkeypatch):
  exits = []
  monkeypatch.setattr(os, "_exit", exits.append)
  with preemption.StopSignals(preemption.parse_signals("INT,USR1")) as stop:
    assert stop.requested is None
    os.kill(os.getpid(), signal.SIGUSR1)
    assert stop.requested == signal.SIGUSR1 and exits == []
    os.kill(os.getpid(), signal.SIGINT)
    assert exits == [128 + signal.SIGINT]
  assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # Handlers are restored.
  with pytest.raises(ValueError, match="SIGNOPE"):
    preemption.parse_signals("TERM,NOPE")


def test_write_failures_of_results_and_events_become_one_write_error(tmp_path, monkeypatch):
  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  runs.write_json(str(tmp_path / "results.json"), {"step": 1})
  monkeypatch.setattr(os, "replace", full)
  with pytest.raises(WriteError, match=r"results.json: No space left on device. The file it"):
    runs.write_json(str(tmp_path / "results.json"), {"step": 2})
  monkeypatch.undo()
  assert runs.read_results(str(tmp_path)) == {"step": 1}
  assert sorted(os.listdir(tmp_path)) == ["results.json"]  # No temporary file left behind.
  writer = runs.metric_writer(str(tmp_path / "tb"))
  message = "ResourceExhaustedError: ... events.out.tfevents; No space left on device"
  monkeypatch.setattr(
    writer._writer, "write_scalars", lambda *a: (_ for _ in ()).throw(RuntimeError(message))
  )
  with pytest.raises(WriteError, match="TensorBoard events in .*No space left on device"):
    writer.write_scalars(0, {"a": 1.0})


@pytest.mark.slow  # Two beta4 members through subprocesses; the single-run signal test stays fast.
def test_a_stopped_local_sweep_stops_its_members_after_they_save(tmp_path):
  sweep_file = tmp_path / "sweep.py"
  sweep_file.write_text(
    "from configs import beta4\nfrom vae_jax.sweep import spec\n\n\n"
    "def get_config(variant=''):\n  return beta4.get_config(variant)\n\n\n"
    "def get_sweep():\n  return spec.product(seed=[0, 1])\n"
  )
  overrides = [a for a in LONG if not a.startswith("--config=")]
  command = [sys.executable, "-m", "vae_jax.sweep", "run", f"--config={sweep_file}"]
  command += [f"--workdir={tmp_path / 'w'}", *overrides]
  proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
  log = tmp_path / "w" / "seed=0" / "train.log"
  # The member logs this line once its signal handlers are in place; on a loaded machine its
  # start-up (imports, data) took over a minute.
  for _ in range(3000):
    if log.exists() and "Training 1500 steps" in log.read_text():
      break
    time.sleep(0.1)
  assert "Training 1500 steps" in log.read_text(), "the member never started training"
  proc.send_signal(signal.SIGTERM)
  out = proc.stdout.read()
  assert proc.wait(timeout=120) != 0
  assert "seed=0: stopped by signal 15 after saving" in out, out
  assert "seed=1: not started" in out, out
  assert "stopped by SIGTERM at step" in log.read_text()
  assert helpers.checkpoint_steps(str(tmp_path / "w" / "seed=0"))
