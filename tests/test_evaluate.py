import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import runs
from vae_jax.data import load_dataset
from vae_jax.errors import ConfigError
from vae_jax.evaluation import suite as eval_suite
from vae_jax.models import build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib
from vae_jax.training import train
from vae_jax.training.checkpoints import Checkpointer


def _mesh(n):
  return meshes.make_mesh(jax.devices()[:n])


@pytest.fixture(scope="module")
def mnist_like_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vae"))
  dataset = synthetic_dataset()
  config = tiny_config(**{"data.binarize": "dynamic"})
  results = train.train_and_evaluate(config, workdir, mesh=_mesh(2), dataset=dataset)
  return workdir, dataset, results


def _read(workdir, name):
  with open(os.path.join(workdir, "eval", name)) as f:
    return json.load(f)


def test_likelihoods_and_diagnostics_are_consistent_written_and_merged(mnist_like_run):
  workdir, dataset, train_results = mnist_like_run
  run = runs.open_run(workdir, "best", mesh=_mesh(4), dataset=dataset)
  options = eval_suite.EvalOptions(iw_samples=64, iw_chunk=32, iw_batch_size=40)
  groups = ["elbo", "iw_nll", "diagnostics"]
  first = eval_suite.evaluate_run(run, groups, options, "best", _mesh(4))
  elbo, iw, diag = (first[g] for g in groups)
  # Same evaluation key and test split as training's evaluation: the same ELBO, to float error.
  assert elbo["nll_elbo"] == pytest.approx(-train_results["eval_elbo"], abs=1e-3)
  assert iw["nll_elbo"] == elbo["nll_elbo"]
  assert iw["iw_nll"] < iw["nll_elbo"] and iw["num_examples"] == 100 and iw["iw_samples"] == 64
  assert iw["iw_nll_bits_per_dim"] == pytest.approx(iw["iw_nll"] / (784 * np.log(2)))
  assert iw["step"] == 8 and iw["checkpoint"] == "best"
  # Diagnostics see each test image binarized with the same key, so the analytic KLs agree.
  assert diag["kl"] == pytest.approx(elbo["kl"], rel=1e-4)
  assert diag["kl"] == pytest.approx(sum(diag["kl_per_dim"]), rel=1e-6)
  assert diag["num_examples"] == 100 and diag["latent_dim"] == 4
  variances = np.asarray(diag["posterior_mean_variance_per_dim"])
  assert diag["active_units"] == np.flatnonzero(variances > 0.01).tolist()
  assert diag["num_active_units"] == len(diag["active_units"])
  assert 0 < diag["mean_variance"] <= 1.5

  later = eval_suite.evaluate_run(
    run, ["diagnostics"], eval_suite.EvalOptions(num_examples=60, batch_size=20), "8", _mesh(2)
  )
  assert later["diagnostics"]["num_examples"] == 60
  merged = _read(workdir, "results.json")
  assert set(merged) == {"elbo", "iw_nll", "diagnostics"}
  assert merged["iw_nll"] == json.loads(json.dumps(iw)) == _read(workdir, "iw_nll.json")
  assert merged["diagnostics"]["checkpoint"] == "8"
  assert merged["diagnostics"]["num_examples"] == 60
  history = runs.read_history(workdir)
  assert [h["step"] for h in history if "metric" not in h] == [4, 8]  # Training's evaluations.
  metrics = [h["metric"] for h in history if "metric" in h]
  assert metrics == ["elbo", "iw_nll", "diagnostics", "diagnostics"]
  assert helpers.scalar_series(os.path.join(workdir, "eval"), "iw_nll/iw_nll") == [
    (8, pytest.approx(iw["iw_nll"], rel=1e-5))
  ]
  assert "diagnostics/num_active_units" in helpers.event_tags(os.path.join(workdir, "eval"))


def test_autoencoder_reports_active_units_only(tmp_path, dataset):
  config = tiny_config(**{"model.name": "ae"})
  model = build_model(config.model, dataset.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 1)
  params = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec).params
  run = runs.Run(str(tmp_path), config, model, dataset, 0, {"params": params})
  assert eval_suite.select_metrics(None, config, dataset) == ["diagnostics"]
  diag = eval_suite.evaluate_run(run)["diagnostics"]
  assert diag["latent_dim"] == 4 and "kl" not in diag and "num_active_units" in diag


@pytest.mark.parametrize(
  "config,names,message",
  [
    (tiny_config(), ["nll"], "Unknown metric 'nll'"),
    (tiny_config(), ["disentanglement"], "'beta_vae' does not apply.*has no ground truth"),
    (tiny_config(**{"model.name": "ae"}), ["iw_nll"], "'iw_nll' does not apply"),
    (tiny_config(**{"model.name": "ae"}), ["elbo"], "'elbo' does not apply.*has no prior"),
  ],
)
def test_inapplicable_metrics_are_refused(dataset, config, names, message):
  with pytest.raises(ConfigError, match=message):
    eval_suite.select_metrics(names, config, dataset)


def test_defaults_select_likelihoods_and_diagnostics_for_a_vae(dataset):
  assert eval_suite.select_metrics(None, tiny_config(), dataset) == [
    "elbo",
    "iw_nll",
    "diagnostics",
  ]
  with pytest.raises(ConfigError, match="iw_batch_size=0 must be >= 1"):
    eval_suite.EvalOptions(iw_batch_size=0).validate(4, tiny_config())


def _evaluate_cli(*args):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, "-m", "vae_jax.evaluate", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_cli_without_checkpoints_fails_with_one_line(tmp_path):
  runs.save_config(tiny_config(), str(tmp_path))
  proc = _evaluate_cli(f"--workdir={tmp_path}")
  assert proc.returncode != 0
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: {tmp_path} has no checkpoints; train it first with vae_jax.main."]
  assert not os.path.exists(tmp_path / "eval")


def _untrained_run(workdir: str, config) -> None:
  """A run directory whose checkpoint is the initial state (training it adds nothing here)."""
  dataset = load_dataset(config.data)
  model = build_model(config.model, dataset.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 1)
  state = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec)
  runs.save_config(config, workdir)
  ckpt = Checkpointer(workdir, 1)
  ckpt.save(0, state)
  ckpt.close()


@pytest.mark.slow
def test_disentanglement_of_a_ground_truth_run_through_the_cli(tmp_path):
  config = tiny_config(
    **{"data.name": "dsprites_procedural", "data.num_eval_examples": 40, "model.arch": "conv"}
  )
  workdir = str(tmp_path)
  _untrained_run(workdir, config)
  proc = _evaluate_cli(
    f"--workdir={workdir}", "--metrics=disentanglement", "--disentanglement_scale=0.01"
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "dci_completeness" in proc.stdout and "step 0, checkpoint latest" in proc.stdout
  results = _read(workdir, "results.json")
  assert set(results) == {"beta_vae", "factor_vae", "mig", "dci", "sap"}
  scores = {k: v for r in results.values() for k, v in r.items()}
  for key in ("beta_vae_accuracy", "factor_vae_accuracy", "mig", "dci_disentanglement", "sap"):
    assert 0 <= scores[key] <= 1, (key, scores[key])
  assert results["mig"]["settings"] == {"num_train": 100, "batch_size": 256}
  assert results["factor_vae"]["settings"] == {
    "num_train": 100,
    "num_eval": 50,
    "num_variance_estimate": 100,
  }
