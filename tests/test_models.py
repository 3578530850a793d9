import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_config
from vae_jax.data.spec import DataSpec
from vae_jax.models import build_model


def _init(name, arch, image_shape=(28, 28, 1)):
  config = tiny_config(**{"model.name": name, "model.arch": arch})
  model = build_model(config.model, DataSpec(image_shape, 10, 60_000))
  x = jnp.ones((3, *image_shape)) * 0.5
  y = jnp.array([0, 1, 2])
  keys = jax.random.split(jax.random.key(0), 3)
  params = model.init(jax.random.key(1), x, keys, y)["params"]
  return model, params, x, y, keys


@pytest.mark.parametrize("name", ["vae", "cvae", "ae"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_output_shapes(name, arch):
  model, params, x, y, keys = _init(name, arch)
  out = model.apply({"params": params}, x, keys, y)
  assert out.out.shape == x.shape
  assert out.z.shape == (3, 4)
  code = model.apply({"params": params}, x, y, method=model.encode)
  assert code.mean.shape == (3, 4)
  if name == "ae":
    assert code.logvar is None and not model.capabilities.density
  else:
    assert code.logvar.shape == (3, 4) and model.capabilities.density
  assert model.capabilities.conditional == (name == "cvae")
  decoded = model.apply({"params": params}, jnp.zeros((5, 4)), jnp.arange(5), method=model.decode)
  assert decoded.shape == (5, 28, 28, 1)


def test_conv_bodies_have_the_issue_layout():
  config = tiny_config(**{"model.arch": "conv"})
  config.model.conv_features, config.model.dense_sizes = (32, 64), (256,)
  model = build_model(config.model, DataSpec((28, 28, 1), 0, 60_000))
  keys = jax.random.split(jax.random.key(0), 1)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), keys)["params"]
  shapes = jax.tree.map(lambda a: a.shape, params)
  assert shapes["encoder"]["Conv_0"]["kernel"] == (3, 3, 1, 32)
  assert shapes["encoder"]["Conv_1"]["kernel"] == (3, 3, 32, 64)
  assert shapes["encoder"]["Dense_0"]["kernel"] == (7 * 7 * 64, 256)
  assert shapes["decoder"]["Dense_1"]["kernel"] == (256, 7 * 7 * 64)
  assert shapes["decoder"]["UpConv_0"]["kernel"] == (3, 3, 64, 32)
  assert shapes["decoder"]["UpConv_1"]["kernel"] == (3, 3, 32, 1)


def test_beta4_architecture_is_the_burgess_layout():
  from configs import beta4

  config = beta4.get_config()
  model = build_model(config.model, DataSpec((64, 64, 1), 0, 737_280))
  keys = jax.random.split(jax.random.key(0), 2)
  params = model.init(jax.random.key(0), jnp.zeros((2, 64, 64, 1)), keys)["params"]
  shapes = jax.tree.map(lambda a: a.shape, params)
  enc, dec = shapes["encoder"], shapes["decoder"]
  assert [enc[f"Conv_{i}"]["kernel"] for i in range(4)] == [(4, 4, 1, 32)] + [(4, 4, 32, 32)] * 3
  assert enc["Dense_0"]["kernel"] == (4 * 4 * 32, 256) and enc["Dense_1"]["kernel"] == (256, 256)
  assert shapes["posterior_head"]["Dense_0"]["kernel"] == (256, 20)  # mu and logvar of 10 dims
  assert dec["Dense_0"]["kernel"] == (10, 256) and dec["Dense_2"]["kernel"] == (256, 512)
  assert [dec[f"UpConv_{i}"]["kernel"] for i in range(4)] == [(4, 4, 32, 32)] * 3 + [(4, 4, 32, 1)]
  out = model.apply({"params": params}, jnp.zeros((2, 64, 64, 1)), keys)
  assert out.out.shape == (2, 64, 64, 1) and out.z.shape == (2, 10)


def test_reparameterization_uses_the_given_keys():
  model, params, x, y, keys = _init("vae", "mlp")
  out = model.apply({"params": params}, x, keys)
  eps = jax.vmap(lambda k: jax.random.normal(k, (4,)))(keys)
  expected = out.stats["mu"] + jnp.exp(0.5 * out.stats["logvar"]) * eps
  np.testing.assert_allclose(out.z, expected, rtol=1e-6)
  other = model.apply({"params": params}, x, jax.random.split(jax.random.key(9), 3))
  assert not np.allclose(out.z, other.z)


def test_cvae_depends_on_label_and_plain_vae_does_not():
  model, params, x, _, keys = _init("cvae", "mlp")
  a = model.apply({"params": params}, x, keys, jnp.array([0, 0, 0])).out
  b = model.apply({"params": params}, x, keys, jnp.array([5, 5, 5])).out
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match="needs labels"):
    model.apply({"params": params}, x, keys, None)
  model, params, x, _, keys = _init("vae", "mlp")
  a = model.apply({"params": params}, x, keys, jnp.array([0, 0, 0])).out
  b = model.apply({"params": params}, x, keys, jnp.array([5, 5, 5])).out
  np.testing.assert_array_equal(a, b)


def test_traversal_rows_follow_the_code_s_kl_and_are_capped():
  from vae_jax.evaluation.summaries import traversal_dims

  np.testing.assert_array_equal(traversal_dims(np.array([0.1, 3.0, 2.0]), 3, 32), [1, 2, 0])
  hierarchical = np.array([0.1, 3.0, 9.0, 9.0])  # top layer (the 2-d code) first
  np.testing.assert_array_equal(traversal_dims(hierarchical, 2, 32), [1, 0])
  np.testing.assert_array_equal(traversal_dims(np.ones(3), 100, 32), np.arange(32))
  np.testing.assert_array_equal(traversal_dims(None, 5, 3), [0, 1, 2])


def test_tensorboard_inputs_are_what_the_encoder_sees(dataset):
  from vae_jax.evaluation.summaries import model_images
  from vae_jax.training import mesh as meshes

  config = tiny_config(**{"data.binarize": "threshold"})
  model = build_model(config.model, dataset.spec)
  keys = jax.random.split(jax.random.key(0), 2)
  model_vars = model.init(jax.random.key(1), jnp.zeros((2, 28, 28, 1)), keys)
  mesh = meshes.make_mesh(jax.devices()[:1])
  images = model_images(model, model_vars, dataset, config, jax.random.key(2), mesh)
  grid = images["reconstructions"][0]
  n = config.num_image_examples
  inputs = np.stack([grid[1:29, 1 + 29 * i : 29 + 29 * i] for i in range(n)])
  expected = (dataset.test_images[:n] / 255.0 > config.data.binarize_threshold).astype(np.float32)
  np.testing.assert_array_equal(inputs, expected)
