import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import REPO, mnist_dir, synthetic_dataset
from vae_jax import errors
from vae_jax.data import DataError, EpochSampler, tfds_images
from vae_jax.data.preprocess import preprocess


def test_sampler_is_a_pure_function_of_seed_and_step():
  a, b = EpochSampler(100, 10, seed=3), EpochSampler(100, 10, seed=3)
  assert a.steps_per_epoch == 10
  np.testing.assert_array_equal(a.indices(17), b.indices(17))
  np.testing.assert_array_equal(a.indices(5), EpochSampler(100, 10, seed=3).indices(5))
  assert not np.array_equal(a.indices(5), EpochSampler(100, 10, seed=4).indices(5))


def test_each_epoch_is_a_new_permutation_without_repeats():
  s = EpochSampler(100, 10, seed=0)
  epoch0 = np.concatenate([s.indices(i) for i in range(10)])
  epoch1 = np.concatenate([s.indices(i) for i in range(10, 20)])
  np.testing.assert_array_equal(np.sort(epoch0), np.arange(100))
  np.testing.assert_array_equal(np.sort(epoch1), np.arange(100))
  assert not np.array_equal(epoch0, epoch1)


def test_partial_last_batch_is_dropped():
  assert EpochSampler(105, 10, seed=0).steps_per_epoch == 10
  with pytest.raises(ValueError, match="exceeds"):
    EpochSampler(5, 10, seed=0)


def test_eval_batches_cover_the_split_once_with_mask():
  ds = synthetic_dataset(n_train=64, n_test=100)
  batches = list(ds.eval_batches(40))
  assert [b["image"].shape[0] for b in batches] == [40, 40, 40]
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 100 and mask[100:].sum() == 0
  idx = np.concatenate([b["index"] for b in batches])[:100]
  np.testing.assert_array_equal(idx, np.arange(100))


def test_preprocess_scales_and_binarizes():
  images = jnp.array([[0, 128, 255, 64]], jnp.uint8).reshape(1, 2, 2, 1)
  keys = jax.random.split(jax.random.key(0), 1)
  x = preprocess(images, keys, "none")
  np.testing.assert_allclose(x.ravel(), [0, 128 / 255, 1, 64 / 255], rtol=1e-6)
  t = preprocess(images, keys, "threshold", 0.3)
  np.testing.assert_array_equal(t.ravel(), [0, 1, 1, 0])


def test_dynamic_binarization_is_binary_keyed_and_has_the_right_mean():
  images = jnp.full((2, 64, 64, 1), 77, jnp.uint8)
  keys = jax.random.split(jax.random.key(1), 2)
  a = preprocess(images, keys, "dynamic")
  np.testing.assert_array_equal(a, preprocess(images, keys, "dynamic"))
  assert set(np.unique(a)) <= {0.0, 1.0}
  assert not np.array_equal(a[0], a[1])
  assert abs(float(a.mean()) - 77 / 255) < 0.02


def test_missing_manual_dir_files_are_named(tmp_path):
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
  with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz") as e:
    tfds_images.prepare("mnist", str(tmp_path / "tfds"), str(tmp_path))
  assert "train-images" not in str(e.value).split("lacks")[1].split("needed")[0]
  assert isinstance(e.value, errors.UserError)  # So every command prints it as one error line.


def test_no_data_and_no_network_says_what_to_put_where(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_images, "_network_available", lambda *a, **k: False)
  with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*manual_dir"):
    tfds_images.prepare("mnist", str(tmp_path / "tfds"))


def test_unknown_dataset_is_one_clear_error(tmp_path):
  with pytest.raises(DataError, match="Unknown TFDS dataset 'no_such_set'"):
    tfds_images.prepare("no_such_set", str(tmp_path))


@pytest.mark.skipif(mnist_dir() is None, reason="real MNIST not found ($VAE_JAX_MNIST_DIR)")
def test_real_mnist_prepares_offline_from_manual_dir(tmp_path):
  from tests.conftest import tiny_config
  from vae_jax.data import load_dataset

  config = tiny_config(**{"data.data_dir": str(tmp_path), "data.manual_dir": mnist_dir()})
  ds = load_dataset(config.data)
  assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.num_classes == 10 and ds.train_images.dtype == np.uint8
  assert int(ds.train_labels[0]) in range(10) and ds.train_images.max() == 255


def test_each_preparation_extracts_into_a_folder_of_its_own(tmp_path, monkeypatch):
  """TFDS names a manual file's extraction after the file: MNIST's would stand in for Fashion's."""
  seen = []

  def download_and_prepare(self, download_config):
    seen.append(download_config.extract_dir)
    assert os.path.isdir(download_config.extract_dir) and not os.listdir(
      download_config.extract_dir
    )

  import tensorflow_datasets as tfds

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: False)
  for name in ("mnist", "fashion_mnist"):
    manual = tmp_path / name
    manual.mkdir()
    for f in tfds_images.MANUAL_FILES[name]:
      (manual / f).write_bytes(b"")
    tfds_images.prepare(name, str(tmp_path / "tfds"), str(manual))
  assert len(set(seen)) == 2 and not any(os.path.exists(d) for d in seen)
  assert all(str(tmp_path / "tfds") not in d for d in seen)


@pytest.mark.slow
def test_mnist_then_fashion_mnist_in_one_data_dir_are_different_images(tmp_path):
  dirs = {n: os.path.join(REPO, "..", "shared/data", n) for n in ("mnist", "fashion_mnist")}
  if not all(os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")) for d in dirs.values()):
    pytest.skip("needs the MNIST and Fashion-MNIST files in ../shared/data")
  means = {}
  for name, manual in dirs.items():
    builder = tfds_images.prepare(name, str(tmp_path / "tfds"), manual)
    means[name] = tfds_images.load_split(builder, "test")[0].mean()
  assert means["mnist"] == pytest.approx(33.79, abs=0.01)
  assert means["fashion_mnist"] == pytest.approx(73.15, abs=0.01)
