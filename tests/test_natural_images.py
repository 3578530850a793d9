"""Natural images: the CIFAR-10 and CelebA 64 configs end to end on TFDS mock data, in bits/dim."""

import json
import math
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import celeba64_vae, cifar10_vae
from tests import helpers
from tests.conftest import tiny_config
from vae_jax import configuration, runs
from vae_jax.data import tfds_images
from vae_jax.errors import ConfigError
from vae_jax.evaluation import suite
from vae_jax.evaluation.inference import Inference
from vae_jax.models import bodies
from vae_jax.training import mesh as meshes
from vae_jax.training import train


def test_center_crop_and_resize_in_tf_data():
  image = np.arange(218 * 178 * 3, dtype=np.int64).reshape(218, 178, 3) % 251
  crop = tfds_images._image_and_label(148, 0)({"image": tf.constant(image, tf.uint8)})
  np.testing.assert_array_equal(crop["image"].numpy(), image[35:183, 15:163])
  flat = np.full((218, 178, 3), 77, np.uint8)
  out = tfds_images._image_and_label(148, 64)({"image": tf.constant(flat), "label": 3})
  assert out["image"].dtype == tf.uint8 and out["label"] == 3
  np.testing.assert_array_equal(out["image"].numpy(), np.full((64, 64, 3), 77))
  with pytest.raises(ConfigError, match="center_crop=200 exceeds the 218x178"):
    tfds_images.check_crop("celeb_a", (218, 178, 3), 200)


def test_resnet_bodies_shapes_and_identity_start():
  config = cifar10_vae.get_config("quick").model
  config.num_mixtures, config.conv_features, config.latent_dim = 3, (4, 8, 16), 8
  enc, dec = bodies.build_bodies(config, (32, 32, 3))
  x, z = jax.ShapeDtypeStruct((2, 32, 32, 3), "float32"), jax.ShapeDtypeStruct((2, 8), "float32")
  shapes = [
    jax.eval_shape(lambda v, m=m: m.apply(m.init(jax.random.key(1), v), v), v)
    for m, v in ((enc, x), (dec, z))
  ]
  assert shapes[0].shape == (2, 4 * 4 * 16) and shapes[1].shape == (2, 32, 32, 3, 10)
  block = bodies.ResBlock()
  h = jax.random.normal(jax.random.key(3), (1, 4, 4, 8))
  out = jax.jit(lambda v: block.apply(block.init(jax.random.key(4), v), v))(h)
  np.testing.assert_array_equal(out, h)


def test_logistic_mixture_rejects_binarized_data():
  config = configuration.resolve(cifar10_vae.get_config("quick"))
  config.data.binarize = "dynamic"
  with pytest.raises(ConfigError, match="logistic_mixture"):
    configuration.validate(config, 1)


def _tiny(config, data_dir: str, manual_dir: str):
  config.data.data_dir, config.data.manual_dir = data_dir, manual_dir
  config.data.batch_size, config.data.eval_batch_size = 16, 20
  config.model.conv_features = tuple(8 * 2**i for i in range(len(config.model.conv_features)))
  config.model.latent_dim, config.model.num_mixtures = 8, 2
  config.num_train_steps = config.log_every_steps = 4
  config.eval_every_steps = config.checkpoint_every_steps = 2
  config.num_image_examples = config.num_prior_samples = 2
  config.num_traversal_inputs = 1
  return configuration.resolve(config)


@pytest.mark.slow
@pytest.mark.parametrize(
  "module,name,shape",
  [(cifar10_vae, "cifar10", (32, 32, 3)), (celeba64_vae, "celeb_a", (64, 64, 3))],
)
def test_trains_on_tfds_mock_data_and_reports_bits_per_dim(tmp_path, module, name, shape):
  """The real TFDS path with TFDS's mock records; CelebA's 218x178 mocks are cropped to 64x64."""
  manual = tmp_path / "manual"
  manual.mkdir()
  for f in tfds_images.MANUAL_FILES[name]:
    (manual / f).write_bytes(b"")  # placeholders: the mocked prepare never reads them
  config = _tiny(module.get_config("quick"), str(tmp_path / "tfds"), str(manual))
  workdir, mesh = str(tmp_path / "run"), meshes.make_mesh(jax.devices()[:2])
  dims = math.prod(shape) * math.log(2)
  with tfds.testing.mock_data(num_examples=40):
    results = train.train_and_evaluate(config, workdir, mesh=mesh)
    run = runs.open_run(workdir, "latest", mesh=mesh)
    options = suite.EvalOptions(iw_samples=4, iw_chunk=2, iw_batch_size=20)
    iw = suite.evaluate_run(run, ["iw_nll"], options, mesh=mesh)["iw_nll"]
  assert results["step"] == 4 and sorted(helpers.checkpoint_steps(workdir)) == ["2", "4"]
  assert run.dataset.spec.image_shape == shape
  written = helpers.results(workdir)
  assert written["eval_bits_per_dim"] == pytest.approx(-written["eval_elbo"] / dims, rel=1e-6)
  assert 0 < written["eval_bits_per_dim"] < 16  # a pmf over 256 values: far below 8 + slack
  # vae_jax.evaluate's single-sample ELBO uses training's evaluation keys: the same bits/dim.
  assert iw["nll_elbo_bits_per_dim"] == pytest.approx(written["eval_bits_per_dim"], rel=1e-4)
  assert iw["iw_nll_bits_per_dim"] == pytest.approx(iw["iw_nll"] / dims, rel=1e-6)
  with open(os.path.join(workdir, "eval", "results.json")) as f:
    assert set(json.load(f)) == {"iw_nll"}
  assert "eval/bits_per_dim" in helpers.event_tags(workdir)
  inference = Inference(run.model, run.model_vars, run.config, mesh)
  samples = inference.prior_samples(jax.random.key(0), 2)
  recons = inference.reconstruct(run.dataset.test_images[:2] / 255.0)
  for images in (samples, recons):  # mean images of the mixture, what the tools save
    assert images.shape == (2, *shape) and images.min() >= 0 and images.max() <= 1


def test_mlp_vae_with_the_mixture_trains_and_writes_bits_per_dim(tmp_path, dataset):
  """Grayscale synthetic 28x28 images through an MLP decoder of (28, 28, K, 3) outputs."""
  config = tiny_config(**{"model.likelihood": "logistic_mixture", "model.num_mixtures": 2})
  workdir = str(tmp_path)
  train.train_and_evaluate(
    config, workdir, mesh=meshes.make_mesh(jax.devices()[:1]), dataset=dataset
  )
  written = helpers.results(workdir)
  bits = -written["eval_elbo"] / (784 * math.log(2))
  assert written["eval_bits_per_dim"] == pytest.approx(bits, rel=1e-6)
  assert 0 < bits < 8  # below the uniform pmf's 8 bits after 8 steps on these blobs
