"""A run's files: old-format runs still evaluate, run tools and resume; JSON files are atomic.

`tests/fixtures/old_runs/` holds three tiny runs written by the code before the model families
owned their config fields (commit 78a93bc): a VAE, a FactorVAE (its discriminator has its own Adam)
and an EMA VQ-VAE (mutable model state). See its README for how they were made.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import configuration, runs
from vae_jax.errors import CheckpointError
from vae_jax.evaluation import suite
from vae_jax.sweep import launch
from vae_jax.tools import generation, reconstruction
from vae_jax.tools.common import open_run as open_tool_run
from vae_jax.training import mesh as meshes
from vae_jax.training import train

FIXTURES = os.path.join(REPO, "tests", "fixtures", "old_runs")
OLD_RUNS = ("vae", "factorvae", "vqvae")


@pytest.fixture()
def old_run(tmp_path, request):
  """A writable copy of one old-format run."""
  workdir = str(tmp_path / request.param)
  shutil.copytree(os.path.join(FIXTURES, request.param), workdir)
  return workdir


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _old(name: str, file: str) -> dict:
  return _read(os.path.join(FIXTURES, name, file))


def test_old_flat_configs_migrate_to_the_family_fields():
  for name in OLD_RUNS:
    new = configuration.migrate(_old(name, "config.json"))
    assert not any(k.startswith(("vq_", "hvae_", "iaf_", "btcvae_")) for k in new["model"]), name
    assert "discriminator_learning_rate" not in new["optimizer"]
    assert configuration.migrate(new) == new
  assert configuration.migrate(_old("factorvae", "config.json"))["model"]["factorvae"] == {
    "gamma": 35.0,
    "discriminator_hidden_sizes": [8, 8],
    "discriminator_learning_rate": 1e-4,
    "discriminator_b1": 0.5,
    "discriminator_b2": 0.9,
  }
  vq = configuration.migrate(_old("vqvae", "config.json"))["model"]["vqvae"]
  assert vq["num_codes"] == 8 and vq["codebook_update"] == "ema"
  flat_btcvae = {
    "model": {"name": "btcvae", "btcvae_beta": 6.0, "btcvae_dataset_size": 737_280},
    "optimizer": {},
  }
  assert configuration.migrate(flat_btcvae)["model"] == {"name": "btcvae", "btcvae": {"beta": 6.0}}


@pytest.mark.parametrize("old_run", OLD_RUNS, indirect=True)
def test_old_runs_evaluate_to_their_recorded_elbo(old_run):
  name = os.path.basename(old_run)
  mesh = meshes.make_mesh(jax.devices()[:1])
  run = runs.open_run(old_run, dataset=synthetic_dataset(), mesh=mesh)
  assert run.step == 8
  values = suite.evaluate_run(run, ["elbo"])
  recorded = _old(name, "results.json")["eval_elbo"]
  np.testing.assert_allclose(-values["elbo"]["nll_elbo"], recorded, rtol=1e-5)


@pytest.mark.parametrize("old_run", OLD_RUNS, indirect=True)
def test_old_runs_run_tools(old_run):
  run = open_tool_run(old_run, dataset=synthetic_dataset())
  result = reconstruction.run_reconstruct(run, num=3)
  assert result["images"].shape == (3, 28, 28, 1) and os.path.exists(result["files"][0])
  assert generation.run_sample(run, num=4)["images"].shape == (4, 28, 28, 1)


@pytest.mark.parametrize("old_run", OLD_RUNS, indirect=True)
def test_old_runs_resume_with_their_migrated_config(old_run):
  config = runs.load_config(old_run)
  config.num_train_steps = 12
  before = helpers.checkpoint_params(old_run, 8)
  mesh = meshes.make_mesh(jax.devices()[:1])
  results = train.train_and_evaluate(config, old_run, mesh=mesh, dataset=synthetic_dataset())
  assert results["step"] == 12 and np.isfinite(results["eval_loss"])
  assert sorted(int(s) for s in helpers.checkpoint_steps(old_run)) == [12]  # keep_checkpoints=1
  after = helpers.checkpoint_params(old_run, 12)
  pairs = zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
  assert any(not np.allclose(a, b) for a, b in pairs)
  rewritten = _read(os.path.join(old_run, "config.json"))
  assert configuration.migrate(rewritten) == rewritten  # Saved again in today's format.


def test_resuming_with_another_dispatch_or_eval_batch_size_is_allowed(dataset, tmp_path):
  mesh = meshes.make_mesh(jax.devices()[:1])
  train.train_and_evaluate(tiny_config(), str(tmp_path), mesh=mesh, dataset=dataset)
  longer = tiny_config(
    **{"num_train_steps": 12, "steps_per_execution": 4, "data.eval_batch_size": 20}
  )
  assert train.train_and_evaluate(longer, str(tmp_path), mesh=mesh, dataset=dataset)["step"] == 12
  with pytest.raises(CheckpointError, match=r"different config \(data.batch_size\)"):
    train.train_and_evaluate(
      tiny_config(**{"data.batch_size": 16}), str(tmp_path), mesh=mesh, dataset=dataset
    )


def test_json_files_are_replaced_whole(tmp_path, monkeypatch):
  path = str(tmp_path / "results.json")
  runs.write_json(path, {"step": 1})

  def broken_dump(value, f, **kwargs):
    f.write('{"step": ')
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(json, "dump", broken_dump)
  with pytest.raises(OSError, match="No space left"):
    runs.write_json(path, {"step": 2})
  monkeypatch.undo()
  assert runs.read_results(str(tmp_path)) == {"step": 1}


def test_a_member_in_epochs_is_unfinished_once_more_epochs_are_asked_for(dataset, tmp_path):
  config = tiny_config(**{"num_train_steps": -1, "num_epochs": 1})
  mesh = meshes.make_mesh(jax.devices()[:1])
  results = train.train_and_evaluate(config, str(tmp_path), mesh=mesh, dataset=dataset)
  assert results["target"] == {"num_epochs": 1}
  assert launch.is_finished(str(tmp_path), config) == results["step"]
  config.num_epochs = 2
  assert launch.is_finished(str(tmp_path), config) is None
