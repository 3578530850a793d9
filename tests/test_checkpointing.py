"""Checkpoints written by earlier versions of the train state still restore."""

import jax
import numpy as np
import optax

from tests.conftest import tiny_config
from vae_jax.models import build_model
from vae_jax.training import state as state_lib
from vae_jax.training.checkpoints import Checkpointer


def test_checkpoint_without_model_state_restores_into_a_model_without_one(dataset, tmp_path):
  config = tiny_config()
  model = build_model(config.model, dataset.spec)
  tx = optax.adam(1e-3)
  state = state_lib.init_state(model, tx, jax.random.key(0), dataset.spec)
  old_format = {"step": state.step + 5, "params": state.params, "opt_state": state.opt_state}
  ckpt = Checkpointer(str(tmp_path), keep=1)
  ckpt.save(5, old_format)
  ckpt.close()
  template = state_lib.init_state(model, tx, jax.random.key(1), dataset.spec)
  restored = Checkpointer(str(tmp_path), keep=1).restore(template)
  assert int(restored.step) == 5 and restored.model_state == {}
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
