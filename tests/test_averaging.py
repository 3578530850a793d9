"""Polyak averaging of the parameters (`optimizer.ema_decay`): its numbers, and that runs use it."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests import helpers
from tests.conftest import tiny_config
from vae_jax import runs
from vae_jax.training import averaging, optimizer, train
from vae_jax.training import mesh as meshes


def test_the_average_follows_the_warm_up_decay_on_known_updates():
  # SGD with rate 1 on a constant gradient 1 from 0: the parameters go -1, -2, -3.
  tx = averaging.with_params_ema(optax.sgd(1.0), decay=0.2)
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    params = optax.apply_updates(params, updates)
  # Decays min(0.2, (1 + t) / (10 + t)) at t = 0, 1, 2: 0.1, 2/11, 0.2.
  ema = 0.1 * 0.0 + 0.9 * -1.0
  ema = 2 / 11 * ema + 9 / 11 * -2.0
  ema = 0.2 * ema + 0.8 * -3.0
  assert int(state.count) == 3
  np.testing.assert_allclose(float(state.ema["w"]), ema, rtol=1e-6)
  assert float(params["w"]) == -3.0
  np.testing.assert_allclose(float(averaging.decay_at(0.999, 90)), 0.91, rtol=1e-6)


def test_averaging_leaves_the_optimizer_updates_unchanged():
  config = tiny_config().optimizer
  plain, _ = optimizer.make_optimizer(config, 100)
  config.ema_decay = 0.99
  averaged, _ = optimizer.make_optimizer(config, 100)
  params = {"w": jnp.arange(3.0), "b": jnp.ones(2)}
  grads = jax.tree.map(lambda p: 0.1 * p + 1.0, params)
  ours, state = averaged.update(grads, averaged.init(params), params)
  theirs, _ = plain.update(grads, plain.init(params), params)
  helpers.assert_trees_close(ours, theirs, atol=0)
  assert averaging.averaged_params(state, params) is state.ema
  assert averaging.averaged_params(plain.init(params), params) is params


def test_runs_evaluate_and_resume_with_the_average(dataset, tmp_path):
  mesh = meshes.make_mesh(jax.devices()[:2])
  plain, full, cut = (str(tmp_path / name) for name in ("plain", "full", "cut"))
  config = tiny_config(**{"data.binarize": "dynamic"})
  train.train_and_evaluate(config, plain, mesh=mesh, dataset=dataset)
  config = tiny_config(**{"data.binarize": "dynamic", "optimizer.ema_decay": 0.9})
  averaged = train.train_and_evaluate(config, full, mesh=mesh, dataset=dataset)
  # Training is unchanged; evaluation and the tools' variables are the average.
  raw = helpers.checkpoint_params(full, 8)
  helpers.assert_trees_close(raw, helpers.checkpoint_params(plain, 8), atol=0)
  tool_params = runs.open_run(full, dataset=dataset, mesh=mesh).model_vars["params"]
  pairs = zip(jax.tree.leaves(tool_params), jax.tree.leaves(raw), strict=True)
  assert max(float(np.abs(np.asarray(a) - b).max()) for a, b in pairs) > 1e-4
  unrestored = runs.open_run(full, dataset=dataset, mesh=mesh, restore=False)
  last = runs.restore_run(unrestored, mesh, averaged=False).model_vars["params"]
  helpers.assert_trees_close(last, raw, atol=0)
  assert averaged["eval_loss"] != helpers.results(plain)["eval_loss"]
  # Killed after the step-4 checkpoint: resuming restores the average too.
  train.train_and_evaluate(config, cut, mesh=mesh, dataset=dataset)
  shutil.rmtree(os.path.join(cut, "checkpoints", "8"))
  os.remove(os.path.join(cut, "results.json"))
  resumed = train.train_and_evaluate(config, cut, mesh=mesh, dataset=dataset)
  assert resumed["eval_loss"] == averaged["eval_loss"]
