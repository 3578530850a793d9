"""Vectorized sweeps: members trained as one program equal the same members trained one by one."""

import jax
import numpy as np
import pytest

from tests import helpers
from tests.conftest import tiny_config
from vae_jax.errors import ConfigError
from vae_jax.training import mesh as meshes
from vae_jax.training import train, vectorized

MEMBERS = [
  {"objective.beta": 1.0, "seed": 0},
  {"objective.beta": 4.0, "seed": 1, "optimizer.learning_rate": 3e-3},
]


def _configs(**common):
  return [tiny_config(**{"data.binarize": "dynamic", **common, **m}) for m in MEMBERS]


def test_only_shape_preserving_fields_may_differ():
  hparams = vectorized.member_hparams(_configs())
  assert set(hparams) == {"objective.beta", "optimizer.learning_rate"}
  np.testing.assert_array_equal(hparams["objective.beta"], [1.0, 4.0])
  configs = _configs()
  configs[1].model.latent_dim = 8
  with pytest.raises(ConfigError, match="model.latent_dim"):
    vectorized.member_hparams(configs)


def test_member_mesh_spreads_members_when_they_divide_the_devices():
  assert dict(vectorized.make_member_mesh(2, jax.devices()[:4]).shape) == {"member": 2, "data": 2}
  assert dict(vectorized.make_member_mesh(3, jax.devices()[:4]).shape) == {"member": 1, "data": 4}


def test_looped_members_equal_vmapped_members():
  def fn(a, shared, b):
    return a * shared + b.sum(), {"d": a - b[0]}

  a, shared, b = np.arange(3.0), np.float32(2.0), np.arange(12.0).reshape(3, 4)
  want = jax.vmap(fn, in_axes=(0, None, 0))(a, shared, b)
  got = vectorized.looped(fn, (0, None, 0))(a, shared, b)
  helpers.assert_trees_close(got, want, atol=0)


@pytest.mark.parametrize(
  "overrides, devices",
  [
    ({}, 4),
    pytest.param({"objective.kl_schedule": "linear"}, 4, marks=pytest.mark.slow),
    # Conv members on CPU run in a loop (both on one device), not vmapped.
    pytest.param({"model.arch": "conv"}, 1, marks=pytest.mark.slow),
  ],
)
def test_each_member_equals_its_separate_run(dataset, tmp_path, overrides, devices):
  configs = _configs(**overrides, **{"objective.kl_warmup_steps": 6})
  configs[1].objective.kl_warmup_steps = 3
  assert vectorized.loops_members(configs[0]) == (configs[0].model.arch == "conv")
  dirs = [str(tmp_path / f"v{i}") for i in range(len(configs))]
  got = vectorized.train_members(configs, dirs, devices=jax.devices()[:devices], dataset=dataset)
  mesh = meshes.make_mesh(jax.devices()[:devices])
  for i, config in enumerate(configs):
    alone = str(tmp_path / f"s{i}")
    expected = train.train_and_evaluate(config, alone, mesh=mesh, dataset=dataset)
    for key in ("eval_loss", "eval_recon", "eval_kl", "eval_elbo"):
      np.testing.assert_allclose(got[i][key], expected[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert got[i]["step"] == expected["step"] == 8
    helpers.assert_trees_close(
      helpers.checkpoint_params(dirs[i], 8), helpers.checkpoint_params(alone, 8), atol=1e-5
    )
    vec_curve = helpers.scalar_series(dirs[i], "train/loss")
    alone_curve = helpers.scalar_series(alone, "train/loss")
    np.testing.assert_allclose([v for _, v in vec_curve], [v for _, v in alone_curve], rtol=1e-5)
  assert got[0]["eval_loss"] != got[1]["eval_loss"]


def test_a_vectorized_sweep_resumes_from_its_members_checkpoints(dataset, tmp_path):
  configs = _configs()
  dirs = [str(tmp_path / f"v{i}") for i in range(len(configs))]
  vectorized.train_members(configs, dirs, devices=jax.devices()[:2], dataset=dataset)
  longer = _configs(num_train_steps=12)
  results = vectorized.train_members(longer, dirs, devices=jax.devices()[:2], dataset=dataset)
  assert [r["step"] for r in results] == [12, 12]
  assert sorted(int(s) for s in helpers.checkpoint_steps(dirs[0])) == [4, 8, 12]
