"""`anomaly --ood_dataset` and the input-complexity score of Serrà et al. (2020)."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import runs
from vae_jax.models import build_model
from vae_jax.tools import ToolError, anomaly, ood, open_run
from vae_jax.training import mesh as meshes
from vae_jax.training import steps, train
from vae_jax.training.keys import index_keys

IDX_FILES = (
  "train-images-idx3-ubyte.gz",
  "train-labels-idx1-ubyte.gz",
  "t10k-images-idx3-ubyte.gz",
  "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="module")
def data():
  return synthetic_dataset()


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> runs.Run:
  """A tiny VAE trained on the synthetic blobs (its config names mnist, the default)."""
  workdir = str(tmp_path_factory.mktemp("ood") / "run")
  config = tiny_config(
    **{
      "model.latent_dim": 2,
      "model.hidden_sizes": (64,),
      "optimizer.learning_rate": 3e-3,
      "num_train_steps": 100,
      "log_every_steps": 50,
      "eval_every_steps": 100,
      "checkpoint_every_steps": 100,
    }
  )
  train.train_and_evaluate(config, workdir, mesh=meshes.make_mesh(jax.devices()[:1]), dataset=data)
  return open_run(workdir, dataset=data)


@pytest.fixture
def manual(tmp_path) -> str:
  """Placeholder raw files: TFDS's mock data never reads them."""
  path = tmp_path / "manual"
  path.mkdir()
  for name in (*IDX_FILES, "cifar-10-binary.tar.gz"):
    (path / name).write_bytes(b"")
  return str(path)


def _untrained_run(tmp_path, dataset, **overrides) -> runs.Run:
  """A run without variables: all the checks read."""
  config = tiny_config(**overrides)
  return runs.Run(str(tmp_path), config, build_model(config.model, dataset.spec), dataset, 0, None)


# The complexity term.


def test_a_constant_image_compresses_to_a_fraction_of_noise():
  constant = np.full((28, 28, 1), 128, np.uint8)
  noise = np.random.default_rng(0).integers(0, 256, (28, 28, 1)).astype(np.uint8)
  bits = ood.complexity_bits(np.stack([constant, noise]))
  assert bits[0] < 100 * 8  # 57 bytes of PNG headers and a few of deflate.
  assert bits[1] > 28 * 28 * 8  # Uniform noise does not compress: at least the raw bytes.
  assert bits[0] < bits[1] / 8
  rgb = np.zeros((32, 32, 3), np.uint8)
  assert ood.png_bits(rgb) < ood.png_bits(np.random.default_rng(1).integers(0, 256, rgb.shape))


def test_corrected_score_is_nll_in_bits_minus_the_complexity():
  nll_nats = np.array([100 * math.log(2), 50 * math.log(2)])
  np.testing.assert_allclose(ood.corrected_score(nll_nats, np.array([30.0, 80.0])), [70.0, -30.0])


def test_scored_images_are_what_the_likelihood_sees(data):
  images = data.test_images[:20]
  key = jax.random.key(3)
  assert ood.scored_images(tiny_config(), images, key) is not None
  np.testing.assert_array_equal(ood.scored_images(tiny_config(), images, key), images)
  threshold = tiny_config(**{"data.binarize": "threshold"})
  expected = np.where(images / 255.0 > 0.5, 255, 0)
  np.testing.assert_array_equal(ood.scored_images(threshold, images, key), expected)
  dynamic = tiny_config(**{"data.binarize": "dynamic"})
  binary = ood.scored_images(dynamic, images, key)
  x, _, _ = steps.model_inputs(
    {"image": jnp.asarray(images)}, index_keys(key, jnp.arange(20)), dynamic.data
  )
  np.testing.assert_array_equal(binary, np.asarray(x) * 255)
  assert set(np.unique(binary)) <= {0, 255}
  assert (binary != ood.scored_images(dynamic, images, jax.random.key(4))).any()


# The --ood_dataset path.


def test_ood_dataset_scores_the_test_split_against_the_other_dataset(run, manual):
  heldout = anomaly.run_anomaly(run, heldout=9)
  ood._load_test_images.cache_clear()
  with tfds.testing.mock_data(num_examples=40):  # Uniform-noise images of Fashion-MNIST's shape.
    result = anomaly.run_anomaly(run, ood_dataset="fashion_mnist", ood_manual_dir=manual)
  ood._load_test_images.cache_clear()
  summary, s, positive = result["summary"], result["scores"], result["positive"]
  assert summary["num_examples"] == 100 and summary["num_ood_examples"] == 40
  np.testing.assert_array_equal(positive, np.arange(140) >= 100)
  # The in-distribution group is scored with the plain tool's keys: the same numbers.
  np.testing.assert_array_equal(s[:100], heldout["scores"])
  # Positive = OOD: noise has far lower likelihood under a model of blobs, so AUC near 1.
  assert (
    summary["roc_auc"] == pytest.approx(anomaly.roc_auc(s, positive)) and summary["roc_auc"] > 0.9
  )
  assert summary["mean_score_ood"] > summary["mean_score_in"]
  np.testing.assert_allclose(result["corrected"], s / math.log(2) - result["complexity_bits"])
  np.testing.assert_array_equal(
    result["complexity_bits"][:100], ood.complexity_bits(run.dataset.test_images)
  )
  assert summary["roc_auc_complexity"] == pytest.approx(
    anomaly.roc_auc(result["corrected"], positive)
  )
  # Noise is complex: -L(x) alone ranks it below the blobs.
  assert summary["roc_auc_complexity_only"] == pytest.approx(
    anomaly.roc_auc(-result["complexity_bits"], positive)
  )
  assert summary["roc_auc_complexity_only"] < 0.1
  png, path = result["files"]
  assert png.endswith(".png") and os.path.exists(png)
  with open(path) as f:
    assert json.load(f) == summary


def test_auc_orientation_counts_ood_above_in_distribution():
  in_dist, out = np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0])
  positive = np.r_[np.zeros(3, bool), np.ones(2, bool)]
  # OOD above all in-distribution scores but one pair (2.5 < 3): 5 of 6 pairs.
  assert anomaly.roc_auc(np.r_[in_dist, out], positive) == pytest.approx(5 / 6)
  assert anomaly.roc_auc(-np.r_[in_dist, out], positive) == pytest.approx(1 / 6)


@pytest.mark.parametrize(
  "options,message",
  [
    ({"ood_dataset": "no_such_dataset"}, "--ood_dataset=no_such_dataset: Unknown TFDS dataset"),
    ({"ood_dataset": "cifar10"}, "has 32x32x3 images; the run's mnist has 28x28x1"),
    ({"ood_dataset": "mnist"}, "is the run's own dataset"),
    ({"ood_dataset": "fashion_mnist", "heldout": 3}, "exclude each other"),
    ({"ood_manual_dir": "/tmp"}, "--ood_manual_dir needs --ood_dataset"),
  ],
)
def test_bad_ood_requests_fail_before_any_output(tmp_path, data, manual, options, message):
  bad = _untrained_run(tmp_path, data)
  ood._load_test_images.cache_clear()
  with tfds.testing.mock_data(num_examples=8), pytest.raises(ToolError, match=message):
    anomaly.run_anomaly(bad, **({"ood_manual_dir": manual} | options))
  ood._load_test_images.cache_clear()
  assert not os.path.exists(tmp_path / "tools")


def test_missing_ood_files_and_conditional_models_are_refused(tmp_path, data):
  empty = tmp_path / "tfds"
  bad = _untrained_run(tmp_path, data, **{"data.data_dir": str(empty)})
  with pytest.raises(ToolError, match="--ood_dataset=fashion_mnist: .*does not exist"):
    anomaly.run_anomaly(bad, ood_dataset="fashion_mnist", ood_manual_dir=str(tmp_path / "none"))
  cvae = _untrained_run(tmp_path, data, **{"model.name": "cvae"})
  with pytest.raises(ToolError, match="needs an unconditional model"):
    anomaly.run_anomaly(cvae, ood_dataset="fashion_mnist")
  assert not os.path.exists(tmp_path / "tools")


@pytest.mark.slow
def test_cli_prints_one_error_line_for_an_unknown_ood_dataset(tmp_path):
  """On a 2-step procedural-dSprites run, which the CLI reopens without data files."""
  workdir = str(tmp_path / "run")
  config = tiny_config(
    **{
      "data.name": "dsprites_procedural",
      "data.num_eval_examples": 40,
      "num_train_steps": 2,
      "log_every_steps": 2,
      "eval_every_steps": 2,
      "checkpoint_every_steps": 2,
    }
  )
  train.train_and_evaluate(config, workdir, mesh=meshes.make_mesh(jax.devices()[:1]))
  proc = subprocess.run(
    [sys.executable, "-m", "vae_jax.tools", "anomaly", f"--workdir={workdir}"]
    + ["--ood_dataset=no_such_dataset"],
    cwd=REPO,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    capture_output=True,
    text=True,
    timeout=120,
  )
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert errors[0].startswith("error: --ood_dataset=no_such_dataset: Unknown TFDS dataset")
  assert not os.path.exists(os.path.join(workdir, "tools"))
