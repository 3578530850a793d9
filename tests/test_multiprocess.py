"""Several processes on localhost (JAX's CPU collectives, gloo) train, stop, resume and evaluate
as one run, and give the numbers of one process with as many devices.

Each test starts its processes itself (`python -m vae_jax.main ... --coordinator_address=...`),
on a free port, and ends them whatever happens.
"""

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import REPO

pytestmark = pytest.mark.slow

STEPS = 300
# helpers.TINY_RUN (~25 steps/s for two processes here), with these tests' length and intervals.
TINY = [
  *helpers.TINY_RUN,
  f"--config.num_train_steps={STEPS}",
  "--config.log_every_steps=25",
  f"--config.eval_every_steps={STEPS}",
  f"--config.checkpoint_every_steps={STEPS}",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ) | {"JAX_NUM_CPU_DEVICES": str(devices)}


@contextlib.contextmanager
def _processes(module: str, args: list[str], num: int, devices: int):
  """Starts `num` processes of `module` with `devices` CPU devices each; kills them at the end."""
  port = _free_port()
  procs = []
  try:
    for i in range(num):
      flags = [f"--coordinator_address=localhost:{port}", f"--num_processes={num}"]
      command = [sys.executable, "-m", module, *args, *flags, f"--process_id={i}"]
      procs.append(
        subprocess.Popen(
          command,
          cwd=REPO,
          env=_env(devices),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
        )
      )
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()


def _run(module: str, args: list[str], num: int, devices: int, timeout: int = 300) -> list[str]:
  """Runs `num` processes to the end; asserts they all succeed; returns their stdout."""
  with _processes(module, args, num, devices) as procs:
    outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  return [out for out, _ in outs]


def _train(workdir: str, num: int, devices: int) -> None:
  if num == 1:
    proc = subprocess.run(
      [sys.executable, "-m", "vae_jax.main", *TINY, f"--workdir={workdir}"],
      cwd=REPO,
      env=_env(devices),
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
  else:
    _run("vae_jax.main", [*TINY, f"--workdir={workdir}"], num, devices)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same run trained uninterrupted by 1 process x 4 devices and by 2 processes x 2."""
  root = tmp_path_factory.mktemp("multiprocess")
  one, two = str(root / "one"), str(root / "two")
  _train(one, 1, 4)
  _train(two, 2, 2)
  return {"root": root, "one": one, "two": two}


def _assert_params_close(a: str, b: str, atol: float) -> None:
  helpers.assert_trees_close(
    helpers.checkpoint_params(a, STEPS), helpers.checkpoint_params(b, STEPS), atol=atol
  )


def test_two_processes_train_as_one_process_with_as_many_devices(runs):
  one, two = runs["one"], runs["two"]
  loss_one = helpers.scalar_series(one, "train/loss")
  loss_two = helpers.scalar_series(two, "train/loss")
  assert [s for s, _ in loss_one] == [s for s, _ in loss_two] == list(range(25, STEPS + 1, 25))
  np.testing.assert_allclose([v for _, v in loss_two], [v for _, v in loss_one], rtol=1e-5)
  _assert_params_close(one, two, atol=1e-5)
  a, b = helpers.results(one), helpers.results(two)
  assert a["num_devices"] == b["num_devices"] == 4
  np.testing.assert_allclose(b["eval_elbo"], a["eval_elbo"], rtol=1e-5)
  # Only process 0 wrote: one events file, one line per evaluation.
  events = [f for f in os.listdir(two) if f.startswith("events.out.tfevents")]
  assert len(events) == 1
  with open(os.path.join(two, "eval_history.jsonl")) as f:
    assert len(f.readlines()) == 1


def _wait_for(stream, text: str, timeout: float = 180) -> None:
  start = time.time()
  lines = []
  while time.time() - start < timeout:
    line = stream.readline()
    if not line:
      break
    lines.append(line)
    if text in line:
      return
  raise AssertionError(f"{text!r} never appeared:\n{''.join(lines[-20:])}")


def _stop_mid_way(workdir: str) -> int:
  """Trains 2 x 2 and sends SIGTERM to process 1 only, at a random point; returns the step."""
  args = [*TINY, f"--workdir={workdir}"]
  with _processes("vae_jax.main", args, 2, 2) as procs:
    _wait_for(procs[0].stderr, f"Training {STEPS} steps")
    time.sleep(random.uniform(1.0, 5.0))
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=180)[1] for p in procs]
  for p, err in zip(procs, errs, strict=True):
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
  steps = {int(err.split(" at step ")[1].split(";")[0]) for err in errs}
  assert len(steps) == 1, errs  # Both processes stopped at the same step...
  step = steps.pop()
  assert 0 < step < STEPS and step % 25 == 0
  assert helpers.checkpoint_steps(workdir) == [str(step)]  # ... and saved it together.
  return step


def test_a_sigterm_to_one_process_stops_both_and_the_same_command_resumes_bitwise(runs):
  stopped = str(runs["root"] / "stopped")
  step = _stop_mid_way(stopped)
  resumed_as_four = str(runs["root"] / "resumed_as_four")
  shutil.copytree(stopped, resumed_as_four)
  _train(stopped, 2, 2)
  a = helpers.checkpoint_params(runs["two"], STEPS)
  b = helpers.checkpoint_params(stopped, STEPS)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  # The same checkpoint resumes in one process with the same global batch on 4 devices.
  proc = subprocess.run(
    [sys.executable, "-m", "vae_jax.main", *TINY, f"--workdir={resumed_as_four}"],
    cwd=REPO,
    env=_env(4),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"at step {step}" in proc.stderr
  _assert_params_close(runs["one"], resumed_as_four, atol=1e-5)


def test_two_processes_evaluate_as_one(runs):
  flags = ["--metrics=elbo,iw_nll", "--iw_samples=20", "--iw_batch_size=30"]
  single = subprocess.run(
    [sys.executable, "-m", "vae_jax.evaluate", f"--workdir={runs['one']}", *flags],
    cwd=REPO,
    env=_env(4),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert single.returncode == 0, single.stderr[-3000:]
  two = str(runs["root"] / "two_eval")
  shutil.copytree(runs["one"], two)
  shutil.rmtree(os.path.join(two, "eval"))
  outs = _run("vae_jax.evaluate", [f"--workdir={two}", *flags], 2, 2)
  assert "iw_nll" in outs[0] and outs[1] == ""  # Process 1 prints nothing.
  with open(os.path.join(runs["one"], "eval", "results.json")) as f:
    a = json.load(f)
  with open(os.path.join(two, "eval", "results.json")) as f:
    b = json.load(f)
  for group in ("elbo", "iw_nll"):
    for key, value in a[group].items():
      if isinstance(value, float):
        np.testing.assert_allclose(b[group][key], value, rtol=1e-5, err_msg=f"{group}.{key}")
      else:
        assert b[group][key] == value, key


SWEEP_FILE = """
from configs import beta4
from vae_jax.sweep import spec


def get_config(variant=""):
  return beta4.get_config(variant)


def get_sweep():
  return spec.product({"objective.beta": [4.0, 8.0]}, seed=[0])
"""


def test_a_vectorized_sweep_spreads_its_members_over_both_processes(runs):
  path = runs["root"] / "two_members.py"
  path.write_text(SWEEP_FILE)
  workdir = runs["root"] / "sweep"
  args = ["run", f"--config={path}", f"--workdir={workdir}", "--vectorize", *TINY[1:]]
  outs = _run("vae_jax.sweep", args, 2, 2)
  assert "2 members trained as one program" in outs[0]
  # Member beta=4 is the run of the other tests; its twin has a different loss.
  member = str(workdir / "beta=4,seed=0")
  _assert_params_close(runs["one"], member, atol=1e-5)
  other = helpers.results(str(workdir / "beta=8,seed=0"))
  assert other["eval_loss"] != helpers.results(member)["eval_loss"]
