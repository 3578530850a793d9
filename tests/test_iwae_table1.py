"""The IWAE Table 1 protocol: its schedule, k-sample objectives, two-layer model and cells."""

import math
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.iwae_table1 import config as table1
from experiments.iwae_table1 import run
from tests.conftest import tiny_config
from vae_jax import configuration
from vae_jax.data.spec import DataSpec
from vae_jax.losses import distributions
from vae_jax.models import build_model
from vae_jax.training import keys as prng
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer, steps, train


def test_the_staged_schedule_is_the_papers():
  config = table1.get_config().optimizer
  schedule = optimizer.learning_rate_schedule(config, 1, steps_per_epoch=3_000)
  starts = np.cumsum([0, *config.stage_epochs[:-1]]) * 3_000
  for i, start in enumerate(starts):
    expected = 1e-3 * 10 ** (-i / 7)
    np.testing.assert_allclose(float(schedule(start)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(start + 3_000 * 3**i - 1)), expected, rtol=1e-6)
  assert table1.get_config().num_epochs == 3_280 and table1.get_config("short").num_epochs == 13
  assert sum(config.stage_epochs) * 3_000 == 9_840_000


def test_the_twelve_cells_are_valid_configs():
  assert len(table1.CELLS) == len(table1.PAPER) == 12
  for cell in table1.CELLS:
    config = table1.get_config("short")
    config.update_from_flattened_dict(table1.cell_overrides(cell))
    configuration.resolve(config)
    configuration.validate(config, 1)
    layers = 2 if cell[len(cell.split("_")[0]) - 1] == "2" else 1
    model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
    dims = model.latent_dims if layers == 2 else (model.latent_dim,)
    assert len(dims) == layers and dims[-1] == 50
  with pytest.raises(ValueError, match="Unknown cell"):
    table1.cell_overrides("vae3_k2")


def _stacked(**overrides):
  config = tiny_config(**{"model.name": "stacked", "model.hidden_sizes": (16,), **overrides})
  config.model.stacked.lower_dims, config.model.stacked.hidden_sizes = (6,), (8,)
  model = build_model(config.model, DataSpec((28, 28, 1), 10, 60_000))
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  keys = jax.random.split(jax.random.key(1), 3)
  return config, model, model.init(jax.random.key(2), x, keys), x, keys


def test_stacked_densities_are_the_layers_gaussians_sampled_bottom_up():
  _, model, model_vars, x, keys = _stacked()
  out = model.apply(model_vars, x, keys)
  z1, z2 = out.stats["z_layer_0"], out.stats["z_layer_1"]
  eps = jax.vmap(lambda k: jax.random.normal(k, (6 + 4,)))(keys)
  feats = model.apply(model_vars, x, method=lambda m, v: m.encoder(v))
  mu1, lv1 = model.apply(model_vars, 0, feats, method=model.posterior)
  np.testing.assert_allclose(z1, mu1 + jnp.exp(0.5 * lv1) * eps[:, :6], rtol=1e-5, atol=1e-6)
  mu2, lv2 = model.apply(model_vars, 1, z1, method=model.posterior)
  np.testing.assert_allclose(z2, mu2 + jnp.exp(0.5 * lv2) * eps[:, 6:], rtol=1e-5, atol=1e-6)
  mu_p, lv_p = model.apply(model_vars, 0, z2, method=model.prior)
  log_q = distributions.gaussian_log_density(z1, mu1, lv1) + distributions.gaussian_log_density(
    z2, mu2, lv2
  )
  log_p = distributions.gaussian_log_density(z1, mu_p, lv_p)
  log_p += distributions.standard_normal_log_density(z2)
  np.testing.assert_allclose(out.log_q_z, log_q, rtol=1e-5)
  np.testing.assert_allclose(out.log_p_z, log_p, rtol=1e-5)
  np.testing.assert_allclose(
    out.extra_terms["kl_layer_0"] + out.extra_terms["kl_layer_1"], log_q - log_p, rtol=1e-5
  )
  decoded = model.apply(model_vars, z1, method=lambda m, z: m.decoder(z))
  np.testing.assert_allclose(out.out, decoded, rtol=1e-5, atol=1e-6)
  assert model.apply(model_vars, jax.random.key(3), 5, method=model.generate).shape == (
    5,
    28,
    28,
    1,
  )


def test_the_k_sample_elbo_averages_the_samples_terms(dataset):
  config = tiny_config(**{"objective.num_samples": 4})
  model = build_model(config.model, dataset.spec)
  params = model.init(
    jax.random.key(0), jnp.zeros((2, 28, 28, 1)), jax.random.split(jax.random.key(1), 2)
  )["params"]
  batch = jax.tree.map(jnp.asarray, dataset.train_stream(8, 0).batch(0))
  keys = prng.example_keys(jax.random.key(2), 0, jnp.arange(8))
  terms, _ = steps.forward_terms(model, params, batch, keys, config)
  weights = steps.importance_log_weights(
    model, {"params": params}, batch, keys, config, jnp.arange(4)
  )
  single = config.copy_and_resolve_references()
  single.objective.num_samples = 1
  one, _ = steps.forward_terms(model, params, batch, keys, single)
  np.testing.assert_allclose(terms["iwae"], jax.nn.logsumexp(weights, 0) - math.log(4), rtol=1e-5)
  np.testing.assert_allclose(terms["kl"], one["kl"], rtol=1e-6)  # Analytic: the same for all k.
  assert not np.allclose(terms["recon"], one["recon"])  # Four samples' mean, not one.


@pytest.mark.parametrize("estimator", ["elbo", "iwae"])
def test_a_stacked_cell_trains_with_k_samples(dataset, tmp_path, estimator):
  config, *_ = _stacked(
    **{"objective.estimator": estimator, "objective.num_samples": 3, "data.binarize": "dynamic"}
  )
  config.optimizer.schedule, config.optimizer.stage_epochs = "staged", (1, 3)
  config.optimizer.stage_decay = 0.5
  mesh = meshes.make_mesh(jax.devices()[:2])
  results = train.train_and_evaluate(config, str(tmp_path), mesh=mesh, dataset=dataset)
  assert np.isfinite(results["eval_loss"]) and results["eval_iwae"] >= results["eval_elbo"] - 1e-3
  assert {"eval_kl_layer_0", "eval_kl_layer_1"} <= set(results)


def test_a_bad_epochs_flag_is_one_error_line_before_anything_is_written(tmp_path):
  workdir = tmp_path / "cell"
  command = [sys.executable, "-m", "experiments.iwae_table1.run", "train", "--cell=vae1_k1"]
  done = subprocess.run(
    [*command, f"--workdir={workdir}", "--epochs=3281"], capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == ["error: --epochs=3281 must be in [1, 3280]."]
  assert not workdir.exists()


def test_the_seed_flag_sets_the_cells_seed_and_nothing_else():
  command = ["train", "--cell=iwae2_k5", "--workdir=unused", "--short"]
  default = run.cell_config(run.parser().parse_args(command))
  seeded = run.cell_config(run.parser().parse_args([*command, "--seed=7"]))
  assert seeded.seed == 7 and default.seed != 7
  seeded.seed = default.seed
  assert seeded.to_dict() == default.to_dict()
  assert default.objective.num_samples == 5 and default.objective.estimator == "iwae"


def test_active_units_count_units_whose_posterior_mean_moves_with_x(dataset):
  _, model, model_vars, *_ = _stacked()
  params = jax.tree.map(jnp.zeros_like, model_vars["params"])
  params = {
    **model_vars["params"],
    "q_heads_0": params["q_heads_0"],
    "q_heads_1": params["q_heads_1"],
  }
  head = params["q_heads_0"]["Dense_0"]
  head["kernel"] = head["kernel"].at[:, 0].set(3.0)
  # Unit 0 of layer 0 follows x; every other unit's posterior is N(0, 1) whatever x is.
  fake_run = types.SimpleNamespace(
    model=model,
    model_vars={"params": params},
    dataset=types.SimpleNamespace(test_images=dataset.test_images),
    config=types.SimpleNamespace(seed=0),
  )
  assert run.active_units(fake_run, num_examples=64) == [1, 0]
