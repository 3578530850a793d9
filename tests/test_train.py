import os
import shutil

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import tiny_config
from vae_jax import runs
from vae_jax.errors import NonFiniteLossError
from vae_jax.models import build_model
from vae_jax.training import loop, steps, train
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib


def _mesh(n):
  return meshes.make_mesh(jax.devices()[:n])


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(dataset):
  config = tiny_config()
  mesh = _mesh(1)
  model = build_model(config.model, dataset.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 100)
  rng = jax.random.key(0)
  state = state_lib.init_state(model, tx, rng, dataset.spec)
  step = steps.make_train_step(model, tx, config, mesh)
  batch = jax.device_put(dataset.train_stream(32, 0).batch(0), meshes.batch_sharded(mesh))
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 30
  assert losses[-1] < 0.9 * losses[0]
  assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0


# Metrics agree to 1e-5. Conv gradients are summed in another order per device, and Adam's
# g / sqrt(v) can turn that noise in a near-zero gradient entry into a +-lr step, so for conv models
# 99.9% of parameters must agree to 1e-5 and none may differ by more than steps * lr (Adam's bound).
# Free bits and capacity are nonlinear in the batch-mean KL: they must see the global batch.
@pytest.mark.parametrize(
  "overrides,strict",
  [
    ({"model.name": "vae", "model.arch": "mlp", "objective.free_bits": 0.3}, True),
    pytest.param({"model.name": "cvae", "model.arch": "conv"}, False, marks=pytest.mark.slow),
    ({"objective.kl_penalty": "capacity", "objective.capacity_steps": 4}, True),
  ],
)
def test_one_and_four_devices_give_the_same_run(dataset, tmp_path, overrides, strict):
  config = tiny_config(**{"data.binarize": "dynamic", **overrides})
  r1 = train.train_and_evaluate(config, str(tmp_path / "d1"), mesh=_mesh(1), dataset=dataset)
  r4 = train.train_and_evaluate(config, str(tmp_path / "d4"), mesh=_mesh(4), dataset=dataset)
  assert (r1["num_devices"], r4["num_devices"]) == (1, 4)
  for key in ("eval_loss", "eval_recon", "eval_kl", "eval_elbo"):
    np.testing.assert_allclose(r1[key], r4[key], rtol=1e-5, atol=1e-5, err_msg=key)
  curve1 = helpers.scalar_series(str(tmp_path / "d1"), "train/loss")
  curve4 = helpers.scalar_series(str(tmp_path / "d4"), "train/loss")
  assert len(curve1) == 2
  np.testing.assert_allclose([v for _, v in curve1], [v for _, v in curve4], rtol=1e-5, atol=1e-5)
  p1 = helpers.checkpoint_params(str(tmp_path / "d1"), 8)
  p4 = helpers.checkpoint_params(str(tmp_path / "d4"), 8)
  if strict:
    helpers.assert_trees_close(p1, p4, atol=1e-5)
  else:
    diff = np.concatenate(
      [np.abs(a - b).ravel() for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True)]
    )
    assert np.quantile(diff, 0.999) < 1e-5
    assert diff.max() <= 8 * config.optimizer.learning_rate


def test_many_multi_device_steps_run_without_deadlock(dataset, tmp_path):
  # XLA:CPU stalls in the cross-device all-reduce once ~32 steps are queued (see
  # meshes.DispatchWindow); a loop that never waits on the device reached that by step ~40.
  # Steps must take longer to run than to dispatch for the queue to grow: a wider MLP.
  config = tiny_config(num_train_steps=120, log_every_steps=120, eval_every_steps=120)
  config.checkpoint_every_steps = 120
  config.model.hidden_sizes = (512, 512)
  results = train.train_and_evaluate(config, str(tmp_path), mesh=_mesh(4), dataset=dataset)
  assert results["step"] == 120 and np.isfinite(results["eval_loss"])


def test_dispatches_end_at_logging_evaluation_and_checkpoint_steps():
  ends, step = [], 0
  while step < 20:
    step = loop.dispatch_end(step, 8, 20, (5, 12))
    ends.append(step)
  assert ends == [5, 10, 12, 15, 20]
  assert loop.dispatch_end(0, 1, 20, (5,)) == 1


def test_steady_rate_leaves_out_the_first_evaluation_interval(dataset, tmp_path):
  timing = loop.TrainTime(total=10.0, first=4.0, first_steps=10)
  assert timing.steady_examples_per_sec(40, 8) == 30 * 8 / 6.0
  assert loop.TrainTime(total=2.0, first=2.0, first_steps=5).steady_examples_per_sec(5, 8) is None
  assert loop.TrainTime(total=2.0).steady_examples_per_sec(5, 8) is None
  # 8 steps, evaluations at 4 and 8: the compilation is in the first interval only.
  results = train.train_and_evaluate(tiny_config(), str(tmp_path), mesh=_mesh(1), dataset=dataset)
  assert results["train_steady_examples_per_sec"] > 2 * results["train_examples_per_sec"]
  once = tiny_config(eval_every_steps=8)
  results = train.train_and_evaluate(once, str(tmp_path / "once"), mesh=_mesh(1), dataset=dataset)
  assert results["train_steady_examples_per_sec"] is None


def test_several_steps_per_execution_give_the_same_run(dataset, tmp_path):
  # 3 steps per dispatch with logging, evaluation and checkpoints every 4: dispatches of 3, 1, 3, 1.
  config = tiny_config(**{"data.binarize": "dynamic"})
  r1 = train.train_and_evaluate(config, str(tmp_path / "k1"), mesh=_mesh(1), dataset=dataset)
  config.steps_per_execution = 3
  for devices in (1, 4):
    workdir = str(tmp_path / f"k3d{devices}")
    r3 = train.train_and_evaluate(config, workdir, mesh=_mesh(devices), dataset=dataset)
    for key in ("eval_loss", "eval_recon", "eval_kl", "eval_elbo"):
      np.testing.assert_allclose(r3[key], r1[key], rtol=1e-5, atol=1e-5, err_msg=key)
    curve1 = helpers.scalar_series(str(tmp_path / "k1"), "train/loss")
    curve3 = helpers.scalar_series(workdir, "train/loss")
    assert [s for s, _ in curve3] == [s for s, _ in curve1] == [4, 8]
    np.testing.assert_allclose([v for _, v in curve3], [v for _, v in curve1], rtol=1e-5)
    helpers.assert_trees_close(
      helpers.checkpoint_params(workdir, 8),
      helpers.checkpoint_params(str(tmp_path / "k1"), 8),
      atol=1e-5,
    )


@pytest.mark.parametrize("steps_per_execution", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_resume_after_interruption_equals_an_uninterrupted_run(
  dataset, tmp_path, steps_per_execution
):
  config = tiny_config(**{"data.binarize": "dynamic", "steps_per_execution": steps_per_execution})
  full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
  train.train_and_evaluate(config, full, mesh=_mesh(2), dataset=dataset)
  train.train_and_evaluate(config, cut, mesh=_mesh(2), dataset=dataset)
  # Simulate a run killed after its step-4 checkpoint: drop what came later.
  assert sorted(os.listdir(os.path.join(cut, "checkpoints"))) == ["4", "8"]
  shutil.rmtree(os.path.join(cut, "checkpoints", "8"))
  os.remove(os.path.join(cut, "results.json"))
  resumed = train.train_and_evaluate(config, cut, mesh=_mesh(2), dataset=dataset)
  assert resumed["step"] == 8
  helpers.assert_trees_close(
    helpers.checkpoint_params(full, 8), helpers.checkpoint_params(cut, 8), atol=0
  )
  assert resumed["eval_loss"] == helpers.results(full)["eval_loss"]


def test_training_longer_continues_from_the_checkpoint(dataset, tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(tiny_config(), workdir, mesh=_mesh(1), dataset=dataset)
  more = train.train_and_evaluate(
    tiny_config(num_train_steps=12), workdir, mesh=_mesh(1), dataset=dataset
  )
  assert more["step"] == 12
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == [4, 8, 12]


def test_non_finite_loss_stops_the_run_with_a_clear_message(dataset, tmp_path):
  config = tiny_config(**{"optimizer.learning_rate": 1e12, "log_every_steps": 1})
  with pytest.raises(NonFiniteLossError, match="Non-finite training loss .* at step"):
    train.train_and_evaluate(config, str(tmp_path), mesh=_mesh(1), dataset=dataset)
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "8"))


@pytest.mark.slow
@pytest.mark.parametrize(
  "name,logged", [("beta4", "train/beta"), ("beta_capacity", "train/capacity")]
)
def test_dsprites_configs_train_end_to_end(tmp_path, name, logged):
  import importlib

  config = importlib.import_module(f"configs.{name}").get_config("quick")
  config.update_from_flattened_dict(
    {
      "num_train_steps": 4,
      "log_every_steps": 2,
      "eval_every_steps": 4,
      "checkpoint_every_steps": 4,
      "data.batch_size": 16,
      "data.num_eval_examples": 40,
      "data.eval_batch_size": 20,
      "num_image_examples": 3,
      "num_prior_samples": 4,
      "num_traversal_inputs": 1,
    }
  )
  results = train.train_and_evaluate(config, str(tmp_path), mesh=_mesh(2))
  assert results["step"] == 4 and np.isfinite(results["eval_loss"])
  assert {f"eval_kl_dim_{d:02d}" for d in range(10)} <= set(results)
  tags = helpers.event_tags(str(tmp_path))
  assert {"traversals", "reconstructions", logged, "kl_per_dim/eval/09"} <= tags


@pytest.mark.parametrize("name", ["btcvae", "factorvae"])
def test_eval_loss_is_the_training_objective_with_the_batch_loss(dataset, tmp_path, name):
  # `--checkpoint=best` ranks by eval_loss: it must include what the batch loss adds.
  config = tiny_config(**{"model.name": name})
  results = train.train_and_evaluate(config, str(tmp_path), mesh=_mesh(2), dataset=dataset)
  assert abs(results["eval_batch_loss"]) > 1e-3
  expected = -results["eval_recon"] + results["eval_kl"] + results["eval_batch_loss"]
  np.testing.assert_allclose(results["eval_loss"], expected, rtol=1e-5)
  history = [h["eval_loss"] for h in runs.read_history(str(tmp_path))]
  np.testing.assert_allclose(history[-1], results["eval_loss"], rtol=1e-6)
