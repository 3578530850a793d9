"""AIS on the model families (the joint-density contract) and as `vae_jax.evaluate` groups."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import runs
from vae_jax.data import load_dataset
from vae_jax.errors import ConfigError
from vae_jax.evaluation import ais, likelihood
from vae_jax.evaluation import suite as eval_suite
from vae_jax.losses import distributions, likelihoods
from vae_jax.models import build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib
from vae_jax.training.checkpoints import Checkpointer
from vae_jax.training.keys import index_keys, split_example_keys

fold = jax.random.fold_in
JOINT_FAMILIES = ("vae", "cvae", "iaf", "btcvae", "factorvae", "hvae")


def _mesh(n):
  return meshes.make_mesh(jax.devices()[:n])


def _initial(name, dataset, **overrides):
  config = tiny_config(**{"model.name": name, **overrides})
  model = build_model(config.model, dataset.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 1)
  params = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec).params
  return config, model, {"params": params}


@pytest.mark.parametrize("name", JOINT_FAMILIES)
def test_joint_density_families_give_prior_draws_densities_and_decoder(name, dataset):
  config, model, model_vars = _initial(name, dataset)
  assert model.capabilities.joint_density
  y = jnp.arange(5) if model.capabilities.conditional else None
  z = model.apply(model_vars, jax.random.split(jax.random.key(1), 5), y, method=model.prior_sample)
  log_p = model.apply(model_vars, z, y, method=model.log_prior)
  out = model.apply(model_vars, z, y, method=model.decode_latent)
  assert out.out.shape == (5, 28, 28, 1) and out.log_sigma is None
  if name != "hvae":
    assert z.shape == (5, 4)
    np.testing.assert_allclose(log_p, distributions.standard_normal_log_density(z), rtol=1e-6)
    np.testing.assert_allclose(out.out, model.apply(model_vars, z, y, method=model.decode))
    return
  lower, top = z[:, :64], z[:, 64:]  # The whole latent: layer 0 (model.hvae.lower_dims) first.
  assert z.shape == (5, 64 + 4)
  mu, logvar = model.apply(model_vars, 0, top, method=lambda m, i, above: m.prior(i, above))
  expected = distributions.standard_normal_log_density(top) + distributions.gaussian_log_density(
    lower, mu, logvar
  )
  np.testing.assert_allclose(log_p, expected, rtol=1e-5)
  # The decoder of `decode` (a top z, lower layers at their prior means) is decode_latent's.
  at_means = model.apply(
    model_vars, jnp.concatenate([mu, top], axis=1), method=model.decode_latent
  ).out
  np.testing.assert_allclose(at_means, model.apply(model_vars, top, method=model.decode), atol=1e-6)


@pytest.mark.parametrize("name", ["cvae", "hvae"])
def test_one_distribution_is_importance_sampling_from_the_prior(name, dataset):
  # T = 1: log w = log p(x|z_0) of prior draws, nothing else; recomputed here from the documented
  # keys (a binarized image and a label show that the data reach the model as for iw_nll).
  config, model, model_vars = _initial(name, dataset, **{"data.binarize": "dynamic"})
  images, labels = dataset.test_images[:8], dataset.test_labels[:8]
  y = labels if model.capabilities.conditional else None
  rng = likelihood.evaluation_key(config.seed)
  mesh = _mesh(4)
  model_vars = jax.device_put(model_vars, meshes.replicated(mesh))
  settings = ais.Settings(num_chains=3, num_steps=1, batch_size=8)
  got = ais.log_likelihoods(model, model_vars, images, y, config, mesh, rng, settings)["log_p"]
  data_keys, eps_keys = split_example_keys(index_keys(rng, jnp.arange(8)))
  intensities = jnp.asarray(images, jnp.float32) / 255.0
  x = jax.vmap(jax.random.bernoulli)(data_keys, intensities).astype(jnp.float32)
  expected = []
  for c in range(3):  # Chain c starts from fold_in(fold_in(fold_in(eps_key, 0), c), 0).
    start = jax.vmap(lambda k, c=c: fold(fold(fold(k, 0), c), 0))(eps_keys)
    z = model.apply(model_vars, start, y, method=model.prior_sample)
    out = model.apply(model_vars, z, y, method=model.decode_latent).out
    expected.append(likelihoods.bernoulli_log_likelihood(x, out))
  expected = distributions.logmeanexp(jnp.stack(expected), axis=0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["ae", "vqvae"])
def test_models_without_a_joint_density_are_refused(name, dataset):
  config = tiny_config(**{"model.name": name, "model.arch": "conv"})
  for group in ("ais", "bdmc"):
    with pytest.raises(ConfigError, match=f"'{group}' does not apply.*capabilities.joint_density"):
      eval_suite.select_metrics([group], config, dataset)


def test_bad_ais_options_name_their_flag():
  config = tiny_config()
  for settings, message in (
    (dict(num_chains=0), "ais_chains=0 must be >= 1"),
    (dict(num_steps=0), "ais_steps=0 must be >= 1"),
    (dict(leapfrog_steps=0), "ais_leapfrog=0 must be >= 1"),
    (dict(schedule="cosine"), "ais_schedule='cosine' is not one of"),
    (dict(batch_size=0), "ais_batch_size=0 must be >= 1"),
  ):
    options = eval_suite.EvalOptions(ais_settings=ais.Settings(**settings))
    with pytest.raises(ConfigError, match=message):
      options.validate(4, config)
  with pytest.raises(ConfigError, match="bdmc_examples=0 must be >= 1"):
    eval_suite.EvalOptions(bdmc_examples=0).validate(4, config)


def _initial_run(workdir: str, config, dataset) -> str:
  """A run directory whose step-0 checkpoint is the model's initial state (no training)."""
  model = build_model(config.model, dataset.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 1)
  runs.save_config(config, workdir)
  ckpt = Checkpointer(workdir, 1)
  ckpt.save(
    0, jax.jit(lambda rng: state_lib.init_state(model, tx, rng, dataset.spec))(jax.random.key(0))
  )
  ckpt.close()
  return workdir


@pytest.fixture(scope="module")
def initial_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ais_run"))
  dataset = synthetic_dataset()
  config = tiny_config(**{"data.binarize": "dynamic"})
  return _initial_run(workdir, config, dataset), dataset


def _read(workdir, name):
  with open(os.path.join(workdir, "eval", name)) as f:
    return json.load(f)


def test_ais_and_bdmc_groups_are_written_like_the_others(initial_run):
  workdir, dataset = initial_run
  run = runs.open_run(workdir, mesh=_mesh(4), dataset=dataset)
  settings = ais.Settings(num_chains=4, num_steps=10, leapfrog_steps=5, batch_size=20)
  options = eval_suite.EvalOptions(num_examples=40, ais_settings=settings, bdmc_examples=20)
  out = eval_suite.evaluate_run(run, ["ais", "bdmc"], options, mesh=_mesh(4))
  a, b = out["ais"], out["bdmc"]
  assert a["num_examples"] == 40 and b["num_examples"] == 20 and a["step"] == 0
  assert a["ais_steps"] == b["ais_steps"] == 10 and a["ais_schedule"] == "sigmoid"
  assert a["ais_nll_bits_per_dim"] == pytest.approx(a["ais_nll"] / (784 * np.log(2)))
  assert 0 < a["ais_acceptance"] <= 1 and a["seconds"] > 0
  assert b["bdmc_gap"] == pytest.approx(b["bdmc_upper"] - b["bdmc_lower"])
  assert b["bdmc_gap"] > 0 and b["bdmc_gap_max"] >= b["bdmc_gap"]
  assert a["ais_nll"] == pytest.approx(-np.mean(a["ais_log_p_per_example"]))
  assert len(b["bdmc_lower_per_example"]) == 20
  assert _read(workdir, "ais.json") == json.loads(json.dumps(a))
  assert set(_read(workdir, "results.json")) >= {"ais", "bdmc"}
  assert [h["metric"] for h in runs.read_history(workdir) if "metric" in h] == ["ais", "bdmc"]
  tags = helpers.event_tags(os.path.join(workdir, "eval"))
  assert {"ais/ais_nll", "bdmc/bdmc_gap"} <= tags and "ais/ais_steps" not in tags


def _evaluate_cli(*args):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, "-m", "vae_jax.evaluate", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
  )


@pytest.fixture(scope="module")
def procedural_run(tmp_path_factory):
  """A run directory whose checkpoint is the initial state of a dSprites (procedural) VAE."""
  workdir = str(tmp_path_factory.mktemp("ais_cli"))
  config = tiny_config(**{"data.name": "dsprites_procedural", "data.num_eval_examples": 40})
  return _initial_run(workdir, config, load_dataset(config.data))


@pytest.mark.slow
def test_cli_runs_ais_and_bdmc_with_their_flags(procedural_run):
  flags = ("--ais_chains=3", "--ais_steps=4", "--ais_leapfrog=2", "--ais_schedule=linear")
  proc = _evaluate_cli(
    f"--workdir={procedural_run}",
    "--metrics=ais,bdmc",
    "--num_examples=10",
    "--bdmc_examples=6",
    "--ais_batch_size=4",
    *flags,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "ais_nll" in proc.stdout and "bdmc_gap" in proc.stdout
  a, b = _read(procedural_run, "ais.json"), _read(procedural_run, "bdmc.json")
  for record in (a, b):
    assert (record["ais_chains"], record["ais_steps"], record["ais_leapfrog"]) == (3, 4, 2)
    assert (record["ais_schedule"], record["ais_batch_size"]) == ("linear", 4)
  assert a["num_examples"] == 10 and b["num_examples"] == 6


def test_cli_bad_ais_flag_fails_with_one_line(procedural_run):
  proc = _evaluate_cli(f"--workdir={procedural_run}", "--metrics=ais", "--ais_chains=0")
  assert proc.returncode != 0
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == ["error: ais_chains=0 must be >= 1."]
