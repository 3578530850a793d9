import csv
import json
import os
import subprocess
import sys

import pytest
from submitit.helpers import DelayedSubmission

from configs import beta4, beta_sweep
from tests.conftest import REPO
from vae_jax.sweep import executors, launch, report, spec

# Shrinks a beta4.py:quick member to a few seconds of training.
TINY = {
  "num_train_steps": "4",
  "data.batch_size": "8",
  "data.num_eval_examples": "16",
  "data.eval_batch_size": "8",
  "log_every_steps": "2",
  "num_prior_samples": "4",
  "num_image_examples": "2",
  "num_traversal_inputs": "1",
  "model.conv_features": "(8,8,8,8)",
  "model.dense_sizes": "(16,)",
}
TINY_FLAGS = [f"--config.{k}={v}" for k, v in TINY.items()]

SWEEP_FILE = """
from configs import beta4
from vae_jax.sweep import spec


def get_config(variant=""):
  return beta4.get_config(variant)


def get_sweep():
  return spec.product({{"objective.beta": {betas}}}, seed=[0])
"""


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory) -> dict[str, str]:
  """Environment of the sweep subprocesses (and so of their members)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("JAX_NUM_CPU_DEVICES", None)
  # The tiny members spend most of their time compiling: compile with less optimisation, and let
  # later members reuse what earlier ones compiled.
  env |= {
    "XLA_FLAGS": "--xla_backend_optimization_level=0",
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }
  return env


def _sweep(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "vae_jax.sweep", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _sweep_config(tmp_path, betas: list[float]) -> str:
  path = tmp_path / "my_sweep.py"
  path.write_text(SWEEP_FILE.format(betas=betas))
  return f"{path}:quick"


def _results(path) -> dict:
  with open(path) as f:
    return json.load(f)


def test_product_varies_the_first_axis_slowest_and_merges_lists():
  assert spec.product({"objective.beta": [1.0, 4.0]}, seed=[0, 1]) == [
    {"objective.beta": 1.0, "seed": 0},
    {"objective.beta": 1.0, "seed": 1},
    {"objective.beta": 4.0, "seed": 0},
    {"objective.beta": 4.0, "seed": 1},
  ]
  arms = [{"objective.kl_schedule": "constant"}, {"objective.kl_schedule": "linear", "x.y": 2}]
  assert spec.product(arms, seed=[3]) == [
    {"objective.kl_schedule": "constant", "seed": 3},
    {"objective.kl_schedule": "linear", "x.y": 2, "seed": 3},
  ]
  assert spec.product({"model.conv_features": [(8, 8)]}) == [{"model.conv_features": (8, 8)}]


@pytest.mark.parametrize(
  "call,message",
  [
    (lambda: spec.product({"objective.beta": 4.0}), "must be a list"),
    (lambda: spec.product({"objective.beta": "14"}), "must be a list"),
    (lambda: spec.product(seed=[]), "has no values"),
    (lambda: spec.product([{"seed": 0}], seed=[1]), "'seed' is set by two parts"),
    (lambda: spec.product([3]), "must be dicts"),
    (lambda: spec.zipped(a=[1, 2], b=[1]), r"different lengths \[1, 2\]"),
    (lambda: spec.zipped(), "at least one"),
  ],
)
def test_bad_sweep_definitions_are_rejected(call, message):
  with pytest.raises(spec.SweepError, match=message):
    call()


def test_zipped_pairs_axes_and_nests_in_product():
  pairs = spec.zipped({"objective.beta": [1, 4], "optimizer.learning_rate": [1e-3, 5e-4]})
  assert pairs == [
    {"objective.beta": 1, "optimizer.learning_rate": 1e-3},
    {"objective.beta": 4, "optimizer.learning_rate": 5e-4},
  ]
  assert len(spec.product(pairs, seed=[0, 1, 2])) == 6


def test_member_names_are_safe_deterministic_and_in_key_order():
  assert spec.member_name({"objective.beta": 4.0, "seed": 1}) == "beta=4,seed=1"
  assert spec.member_name({"seed": 1, "objective.beta": 0.5}) == "seed=1,beta=0.5"
  assert spec.member_name({"optimizer.learning_rate": 1e-05}) == "learning_rate=1e-05"
  assert spec.member_name({"model.conv_features": (8, 16)}) == "conv_features=8-16"
  assert spec.member_name({"data.name": "a/b c"}) == "name=a_b_c"
  assert spec.member_name({"objective.beta": 2.0}, short_names={"objective.beta": "b"}) == "b=2"
  assert spec.member_name({}) == "base"
  with pytest.raises(spec.SweepError, match="share the folder 'beta=1'"):
    spec.member_names([{"objective.beta": 1.0}, {"objective.beta": 1}])


def test_beta_sweep_is_15_members_on_the_beta4_setting():
  path, members = spec.load_sweep("configs/beta_sweep.py:quick")
  assert path == "configs/beta_sweep.py:quick" and len(members) == 15
  assert {m["objective.beta"] for m in members} == {1.0, 2.0, 4.0, 8.0, 16.0}
  assert {m["seed"] for m in members} == {0, 1, 2}
  names = spec.member_names(members)
  assert names[:4] == ["beta=1,seed=0", "beta=1,seed=1", "beta=1,seed=2", "beta=2,seed=0"]
  assert beta_sweep.get_config("quick").to_dict() == beta4.get_config("quick").to_dict()
  assert beta_sweep.get_config().to_dict() == beta4.get_config().to_dict()
  config = spec.load_config(path, members[-1])
  assert config.objective.beta == 16.0 and config.seed == 2 and config.num_train_steps == 3000


def test_plan_applies_shared_overrides_and_rejects_unknown_or_conflicting_ones(tmp_path):
  members, configs = launch.plan("configs/beta_sweep.py", str(tmp_path), {"num_train_steps": 7})
  assert configs["beta=8,seed=1"].num_train_steps == 7
  command = members[0].command
  assert command[1:5] == [
    "-m",
    "vae_jax.main",
    "--config=configs/beta_sweep.py",
    f"--workdir={tmp_path}/beta=1,seed=0",
  ]
  assert command[5:] == [
    "--config.objective.beta=1.0",
    "--config.seed=0",
    "--config.num_train_steps=7",
  ]
  with pytest.raises(spec.SweepError, match="has no config key 'objective.bogus'"):
    launch.plan("configs/beta_sweep.py", str(tmp_path), {"objective.bogus": 1})
  with pytest.raises(spec.SweepError, match="Cannot set num_train_steps='many'"):
    launch.plan("configs/beta_sweep.py", str(tmp_path), {"num_train_steps": "many"})
  with pytest.raises(spec.SweepError, match="would replace a value the sweep varies"):
    launch.plan("configs/beta_sweep.py", str(tmp_path), {"seed": 3})


def test_dry_run_lists_every_member_and_writes_nothing(tmp_path, sweep_env):
  workdir = tmp_path / "w"
  proc = _sweep(
    sweep_env, "run", "--config=configs/beta_sweep.py:quick", f"--workdir={workdir}", "--dry_run"
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert "beta=16,seed=2" in lines and "15 members (dry run" in lines[-1]
  commands = [line.strip() for line in lines if "-m vae_jax.main" in line]
  assert len(commands) == 15
  assert commands[0].endswith(
    f"--workdir={workdir}/beta=1,seed=0 --config.objective.beta=1.0 --config.seed=0"
  )
  assert not workdir.exists()


@pytest.mark.parametrize(
  "args,message",
  [
    (["run", "--config=configs/nope.py"], "error: config file configs/nope.py not found"),
    (["run", "--config=configs/beta4.py"], "error: configs/beta4.py defines no get_sweep()"),
    (["run", "--config=configs/beta_sweep.py:fast"], "Unknown beta4 variant 'fast'"),
    (["run", "--config=configs/beta_sweep.py", "--config.bogus=1"], "--config.bogus names no"),
    (["report"], "error: workdir {tmp}/w does not exist"),
    (["status"], "error: expected one command, run or report; got ['status']"),
  ],
)
def test_bad_input_fails_with_one_error_line(tmp_path, sweep_env, args, message):
  proc = _sweep(sweep_env, *args, f"--workdir={tmp_path}/w")
  assert proc.returncode != 0
  last_line = proc.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: ") and message.format(tmp=tmp_path) in last_line
  assert not (tmp_path / "w").exists()


def test_report_without_results_is_an_error(tmp_path):
  plan = {
    "config": "c.py",
    "overrides": [],
    "members": [{"name": "seed=0", "overrides": {"seed": 0}}],
  }
  (tmp_path / "sweep.json").write_text(json.dumps(plan))
  with pytest.raises(report.ReportError, match="none of the 1 members .* has a results.json"):
    report.write_report(str(tmp_path))


def test_report_averages_over_seeds_per_setting(tmp_path):
  members = spec.product({"objective.beta": [1.0, 4.0]}, seed=[0, 1, 2])
  names = spec.member_names(members)
  plan = {
    "config": "c.py",
    "overrides": [],
    "members": [{"name": n, "overrides": m} for n, m in zip(names, members, strict=True)],
  }
  (tmp_path / "sweep.json").write_text(json.dumps(plan))
  for name, m in zip(names[:-1], members[:-1], strict=True):  # beta=4,seed=2 has not finished
    os.makedirs(tmp_path / name / "eval")
    kl = m["objective.beta"] * 10 + m["seed"]
    results = {
      "step": 3,
      "eval_recon": -100.0 - m["seed"],
      "eval_kl": kl,
      "train_examples_per_sec": None,
    }
    (tmp_path / name / "results.json").write_text(json.dumps(results))
    evaluation = {  # grouped, as `python -m vae_jax.evaluate` writes it
      "mig": {"step": 3, "checkpoint": "3", "mig": 0.1 * m["seed"], "seed": 0},
      "diagnostics": {"step": 3, "num_active_units": 2, "active_units": [0, 4], "kl": 1.5},
    }
    (tmp_path / name / "eval" / "results.json").write_text(json.dumps(evaluation))
  written = report.write_report(str(tmp_path))
  assert [os.path.basename(p) for p in written] == [
    "report.csv",
    "report.md",
    "report_recon.png",
    "report_kl.png",
    "report_mig.png",
    "report_num_active_units.png",
  ]
  md = (tmp_path / "report.md").read_text()
  assert "| objective.beta | n | eval_recon | eval_kl | mig | num_active_units |" in md
  assert "| 1 | 3 | -101 ± 1 | 11 ± 1 | 0.1 ± 0.1 | 2 ± 0 |" in md
  assert "| 4 | 2 | -100.5 ± 0.71 | 40.5 ± 0.71 | 0.05 ± 0.071 | 2 ± 0 |" in md
  assert "5 of 6 members have results" in md and "Without results yet: beta=4,seed=2." in md
  with open(tmp_path / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 5 and rows[4]["name"] == "beta=4,seed=1" and rows[4]["eval_kl"] == "41.0"
  assert rows[4]["train_examples_per_sec"] == "" and rows[4]["mig"] == "0.1"
  assert rows[4]["kl"] == "1.5" and "step" in rows[4] and "seed" in rows[4]


def test_eval_results_may_be_flat_or_grouped():
  flat = {"mig": 0.2, "sap": 0.1, "step": 9, "active_units": 3}
  assert report.eval_scalars(flat, {"name": "x"}) == {
    "mig": 0.2,
    "sap": 0.1,
    "active_units": 3,
  }
  grouped = {
    "elbo": {"step": 9, "nll_elbo": 90.0, "kl": 4.0, "num_examples": 100},
    "iw_nll": {"iw_nll": 88.0, "nll_elbo": 90.1, "iw_samples": 10},
    "dci": {"dci_disentanglement": 0.3, "settings": {"num_train": 10}},
  }
  assert report.eval_scalars(grouped, {"kl": 1}) == {
    "nll_elbo": 90.0,
    "elbo.kl": 4.0,
    "iw_nll": 88.0,
    "iw_nll.nll_elbo": 90.1,
    "dci_disentanglement": 0.3,
  }


def test_run_local_reports_failures_and_runs_the_rest(tmp_path):
  def member(name, code):
    command = [sys.executable, "-c", f"print('hello from {name}'); raise SystemExit({code})"]
    return executors.Member(name, {}, str(tmp_path / name), command)

  members = [member("a", 0), member("b", 3), member("c", 0)]
  failed = executors.run_local(members, str(tmp_path), max_parallel=2)
  assert [m.name for m in failed] == ["b"]
  assert "hello from b" in (tmp_path / "b" / "train.log").read_text()
  executors.run_local(members[:1], str(tmp_path), max_parallel=1)
  log = (tmp_path / "a" / "train.log").read_text()
  assert log.splitlines().count("hello from a") == 2  # appended, not overwritten
  assert log.count("=== ") == 2


def test_requeued_job_is_the_same_member():
  member = executors.Member("beta=1", {"objective.beta": 1.0}, "/w/beta=1", ["true"])
  job = executors.MemberJob(member, "/repo")
  resubmission = job.checkpoint()
  assert isinstance(resubmission, DelayedSubmission)
  assert resubmission.function.member == member and resubmission.function.cwd == "/repo"


def test_failing_member_makes_the_sweep_fail_with_its_log(tmp_path, sweep_env):
  workdir = tmp_path / "w"
  proc = _sweep(
    sweep_env, "run", f"--config={_sweep_config(tmp_path, [-1.0])}", f"--workdir={workdir}"
  )
  assert proc.returncode != 0
  log = workdir / "beta=-1,seed=0" / "train.log"
  assert f"failed: beta=-1,seed=0, log: {log}" in proc.stdout
  assert proc.stderr.strip().splitlines()[-1] == "error: 1 of 1 members failed (logs listed above)"
  assert "objective.beta=-1.0 must be >= 0" in log.read_text()


@pytest.mark.slow
def test_local_sweep_trains_skips_finished_members_and_reports(tmp_path, sweep_env):
  workdir = tmp_path / "w"
  args = [
    "run",
    f"--config={_sweep_config(tmp_path, [1.0, 4.0])}",
    f"--workdir={workdir}",
    *TINY_FLAGS,
  ]
  proc = _sweep(sweep_env, *args, "--max_parallel=2")
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  names = ["beta=1,seed=0", "beta=4,seed=0"]
  results = {n: _results(workdir / n / "results.json") for n in names}
  assert all(r["step"] == 4 for r in results.values())
  assert "-m vae_jax.main" in (workdir / names[0] / "train.log").read_text()
  plan = _results(workdir / "sweep.json")
  assert [m["name"] for m in plan["members"]] == names
  assert plan["members"][1]["overrides"] == {"objective.beta": 4.0, "seed": 0}
  mtimes = [os.stat(workdir / n / "results.json").st_mtime_ns for n in names]

  proc = _sweep(sweep_env, *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in names:
    assert f"{name}: skipped, results.json is at the configured length (step 4)" in proc.stdout
  assert "All 2 members are finished." in proc.stdout
  assert [os.stat(workdir / n / "results.json").st_mtime_ns for n in names] == mtimes

  for i, name in enumerate(names):  # as `python -m vae_jax.evaluate` would add them
    os.makedirs(workdir / name / "eval")
    (workdir / name / "eval" / "results.json").write_text(json.dumps({"mig": {"mig": 0.1 * i}}))
  proc = _sweep(sweep_env, "report", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("report.csv", "report.md", "report_recon.png", "report_kl.png", "report_mig.png"):
    assert (workdir / name).stat().st_size > 0
  with open(workdir / "report.csv") as f:
    rows = {r["name"]: r for r in csv.DictReader(f)}
  for name in names:
    for key in ("eval_recon", "eval_kl", "eval_elbo", "eval_loss", "eval_kl_dim_09"):
      assert float(rows[name][key]) == results[name][key]
  md = (workdir / "report.md").read_text()
  assert f"| 4 | 1 | {results['beta=4,seed=0']['eval_loss']:.4g} |" in md


@pytest.mark.slow
def test_submitit_local_executor_trains_a_member(tmp_path, sweep_env):
  workdir = tmp_path / "w"
  config = _sweep_config(tmp_path, [2.0])
  proc = _sweep(
    sweep_env,
    "run",
    f"--config={config}",
    f"--workdir={workdir}",
    "--executor=slurm_local",
    "--slurm_time_min=5",
    *TINY_FLAGS,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  assert (
    "beta=2,seed=0: submitted as job" in proc.stdout and "beta=2,seed=0: finished" in proc.stdout
  )
  assert _results(workdir / "beta=2,seed=0" / "results.json")["step"] == 4
  assert "-m vae_jax.main" in (workdir / "beta=2,seed=0" / "train.log").read_text()
  assert any(f.endswith("_result.pkl") for f in os.listdir(workdir / "submitit"))


@pytest.mark.slow
def test_vectorized_sweep_writes_every_member_and_skips_them_next_time(tmp_path, sweep_env):
  workdir = tmp_path / "w"
  config = _sweep_config(tmp_path, [1.0, 8.0])
  args = ["run", f"--config={config}", f"--workdir={workdir}", "--vectorize", *TINY_FLAGS]
  proc = _sweep(sweep_env, *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  assert "2 members trained as one program, 0 skipped." in proc.stdout
  results = [_results(workdir / n / "results.json") for n in ("beta=1,seed=0", "beta=8,seed=0")]
  assert [r["step"] for r in results] == [4, 4]
  assert results[0]["eval_loss"] != results[1]["eval_loss"]
  assert os.listdir(workdir / "beta=8,seed=0" / "checkpoints")
  proc = _sweep(sweep_env, *args)
  assert proc.returncode == 0 and "All 2 members are finished." in proc.stdout
