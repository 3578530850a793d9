"""FID and improved precision/recall: the formulas, the feature networks and the evaluate groups."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.linalg

from tests import helpers
from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import runs
from vae_jax.data import load_dataset
from vae_jax.errors import ConfigError
from vae_jax.evaluation import features, sample_quality
from vae_jax.evaluation import suite as eval_suite
from vae_jax.evaluation.features import network, store
from vae_jax.evaluation.inference import Inference
from vae_jax.models import build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer as optim
from vae_jax.training import state as state_lib
from vae_jax.training.checkpoints import Checkpointer


def _closed_form_scipy(mu1, s1, mu2, s2):
  """The textbook formula with scipy's general matrix square root (an independent route)."""
  root = scipy.linalg.sqrtm(s1 @ s2)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root)))


def test_frechet_distance_matches_hand_computed_gaussians():
  # Diagonal: |mu|^2 = 5, tr = (1 + 4) + (4 + 9) - 2 (sqrt(4) + sqrt(36)) = 2.
  d = sample_quality.frechet_distance([0, 0], np.diag([1.0, 4]), [1, 2], np.diag([4.0, 9]))
  assert d == pytest.approx(7.0, abs=1e-12)
  # S1 = I, S2 with eigenvalues 1 and 3: tr (S1 S2)^(1/2) = 1 + sqrt(3).
  s2 = np.array([[2.0, 1.0], [1.0, 2.0]])
  d = sample_quality.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), s2)
  assert d == pytest.approx(6 - 2 * (1 + np.sqrt(3)), abs=1e-12)
  # Singular covariances (rank 1 each, orthogonal): no cross term, FID = tr S1 + tr S2.
  d = sample_quality.frechet_distance([0, 0], np.diag([1.0, 0]), [0, 0], np.diag([0.0, 1]))
  assert d == pytest.approx(2.0, abs=1e-12)


def test_frechet_distance_matches_scipy_on_random_covariances():
  rng = np.random.default_rng(0)
  for _ in range(5):
    a, b = rng.normal(size=(2, 6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=(2, 6))
    expected = _closed_form_scipy(mu1, s1, mu2, s2)
    assert sample_quality.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_against_noise_large():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
  assert abs(sample_quality.fid(x, x)) < 1e-8
  # Two halves of one draw: only sampling error, small against the total variance; uniform
  # noise far away: large.
  same = sample_quality.fid(x[:1000], x[1000:])
  assert 0 < same < 0.02 * np.trace(np.cov(x, rowvar=False))
  assert sample_quality.fid(x, rng.uniform(5, 10, size=(2000, 16))) > 100 * same
  # Draws of two known Gaussians: their FID converges to the closed form.
  mu2, scale = np.full(16, 0.5), np.diag(np.linspace(0.5, 2.0, 16))
  draws_a = rng.normal(size=(50_000, 16))
  draws_b = mu2 + rng.normal(size=(50_000, 16)) @ scale
  expected = sample_quality.frechet_distance(np.zeros(16), np.eye(16), mu2, scale @ scale)
  assert sample_quality.fid(draws_a, draws_b) == pytest.approx(expected, rel=0.02)


def test_knn_radii_are_the_kth_nearest_other_point():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(37, 5))
  d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
  for k in (1, 3):
    expected = np.sort(d, axis=1)[:, k]  # Column 0 is the point itself.
    np.testing.assert_allclose(sample_quality.knn_radii(x, k, chunk=8), expected, rtol=1e-4)


def test_precision_recall_of_identical_disjoint_and_hand_made_sets():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(300, 8))
  assert sample_quality.precision_recall(x, x, k=3) == {"precision": 1.0, "recall": 1.0}
  far = sample_quality.precision_recall(x, x + 100.0, k=3)
  assert far == {"precision": 0.0, "recall": 0.0}
  # 1-D, k = 1. Real 0, 1, 3, 7: radii 1, 1, 2, 4. Generated 0.5, 2.6, 5.5, 20: radii 2.1, 2.1,
  # 2.9, 14.5. Precision: 0.5 (ball of 0), 2.6 (ball of 3), 5.5 (ball of 7) are inside, 20 is
  # not: 3/4. Recall: 0 and 1 (ball of 0.5), 3 (of 2.6), 7 (of 5.5 and 20): 4/4.
  real = np.array([[0.0], [1.0], [3.0], [7.0]])
  generated = np.array([[0.5], [2.6], [5.5], [20.0]])
  got = sample_quality.precision_recall(real, generated, k=1)
  assert got == {"precision": 0.75, "recall": 1.0}
  # Generated 0.5, 2.6, 30, 40: radii 2.1, 2.1, 10, 10. Precision: 0.5 and 2.6 only, 2/4.
  # Recall: 7 is 4.4 from 2.6 and 23 from 30, outside both balls: 3/4.
  generated = np.array([[0.5], [2.6], [30.0], [40.0]])
  got = sample_quality.precision_recall(real, generated, k=1)
  assert got == {"precision": 0.5, "recall": 0.75}


def test_precision_recall_do_not_depend_on_the_chunk_size():
  rng = np.random.default_rng(4)
  real, generated = rng.normal(size=(101, 6)), rng.normal(0.3, 1.2, size=(77, 6))
  whole = sample_quality.precision_recall(real, generated, k=3, chunk=1000)
  assert sample_quality.precision_recall(real, generated, k=3, chunk=7) == whole
  assert 0 < whole["precision"] < 1 and 0 < whole["recall"] < 1


def _mesh(n):
  return meshes.make_mesh(jax.devices()[:n])


def _initial_run(workdir: str, config, dataset) -> str:
  """A run directory whose step-0 checkpoint is the model's initial state (no training)."""
  model = build_model(config.model, dataset.spec)
  tx, _ = optim.make_optimizer(config.optimizer, 1)
  runs.save_config(config, workdir)
  ckpt = Checkpointer(workdir, 1)
  state = jax.jit(lambda r: state_lib.init_state(model, tx, r, dataset.spec))(jax.random.key(0))
  ckpt.save(0, state)
  ckpt.close()
  return workdir


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
  """A feature network trained for one epoch on the synthetic 28x28 digits, saved as 'mnist'."""
  workdir = str(tmp_path_factory.mktemp("feats"))
  data = synthetic_dataset(n_train=512)
  net = store.make_net((10,), data.image_shape)
  params = network.train(net, data.train_images, data.train_labels[:, None], 2, jax.random.key(5))
  accuracy = network.accuracies(net, params, data.test_images, data.test_labels[:, None])
  info = {
    "dataset": "mnist",
    "image_shape": list(data.image_shape),
    "heads": [10],
    "head_names": ["label"],
    "conv_features": list(net.conv_features),
    "feature_dim": net.dense,
    "test_accuracy": float(accuracy.mean()),
    "test_accuracy_per_head": {"label": float(accuracy[0])},
    "settings": {"seed": 5},
  }
  store.save(workdir, params, info)
  return workdir, net, params, data


def test_a_saved_feature_network_restores_to_the_same_features(tiny_features):
  workdir, net, params, data = tiny_features
  loaded = features.load(workdir)
  assert loaded.net == net and loaded.test_accuracy > 0.5  # Chance is 0.1.
  x = data.test_images[:37] / np.float32(255.0)
  np.testing.assert_array_equal(loaded.features(x), network.features(net, params, x))
  assert loaded.features(x).shape == (37, 128)


def test_feature_network_checks_name_what_is_wrong(tiny_features, tmp_path):
  workdir = tiny_features[0]
  assert features.check(workdir, "mnist", (28, 28, 1))["dataset"] == "mnist"
  with pytest.raises(ConfigError, match="need --features_workdir; train one with"):
    features.check(None, "mnist", (28, 28, 1))
  with pytest.raises(ConfigError, match="holds no feature network.*feature_net.json is missing"):
    features.check(str(tmp_path / "none"), "mnist", (28, 28, 1))
  with pytest.raises(ConfigError, match="trained on 'mnist'.*not on this run's data.name='fashion"):
    features.check(workdir, "fashion_mnist", (28, 28, 1))
  with pytest.raises(ConfigError, match="trained on 'mnist' \\(28x28x1 images\\)"):
    features.check(workdir, "mnist", (64, 64, 1))


def test_dsprites_feature_targets_are_the_factors():
  options = store.TrainOptions("dsprites_procedural", "unused", num_train=64, seed=3)
  arrays = store.training_arrays(options)
  images, factors = arrays["train"]
  assert arrays["heads"] == (3, 6, 40, 32, 32) and images.shape == (64, 64, 64, 1)
  assert arrays["head_names"] == ("shape", "scale", "orientation", "posX", "posY")
  data = load_dataset(tiny_config(**{"data.name": "dsprites_procedural"}).data).data
  np.testing.assert_array_equal(images, data.render(factors))  # Each image shows its factors.
  again = store.training_arrays(options)["train"][1]
  np.testing.assert_array_equal(factors, again)  # Drawn from (seed, FEATURE_STREAM).
  assert store.make_net(arrays["heads"], images.shape[1:]).conv_features == store.LARGE_CONV


@pytest.fixture(scope="module")
def mnist_like_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  dataset = synthetic_dataset()
  return _initial_run(workdir, tiny_config(), dataset), dataset


def test_groups_score_model_samples_against_test_images(mnist_like_run, tiny_features, monkeypatch):
  workdir, dataset = mnist_like_run
  feats = tiny_features[0]
  run = runs.open_run(workdir, mesh=_mesh(2), dataset=dataset)
  options = eval_suite.EvalOptions(features_workdir=feats, sample_quality_n=60)
  out = eval_suite.evaluate_run(run, ["fid", "precision_recall"], options, mesh=_mesh(2))
  fid, pr = out["fid"], out["precision_recall"]
  # Recomputed from the documented pieces: samples keyed from the seed, the first 60 test images.
  inference = Inference(run.model, run.model_vars, run.config, _mesh(2))
  samples = sample_quality.model_samples(inference, run.config.seed, 60)
  net = features.load(feats)
  real, generated = net.features(dataset.test_images[:60] / 255.0), net.features(samples)
  assert fid["fid"] == pytest.approx(sample_quality.fid(real, generated), rel=1e-6)
  assert pr["precision"] == sample_quality.precision_recall(real, generated, 3)["precision"]
  assert fid["num_samples"] == fid["num_examples"] == 60 and pr["k"] == 3
  assert fid["feature_net_test_accuracy"] == net.test_accuracy == pr["feature_net_test_accuracy"]
  assert fid["feature_net_dataset"] == "mnist" and fid["features_workdir"] == feats
  with open(os.path.join(workdir, "eval", "fid.json")) as f:
    assert json.load(f) == json.loads(json.dumps(fid))
  tags = helpers.event_tags(os.path.join(workdir, "eval"))
  assert {"fid/fid", "precision_recall/precision", "precision_recall/recall"} <= tags
  assert "fid/feature_net_test_accuracy" not in tags
  # Whole chunks do not depend on how many samples are drawn (chunk c is keyed fold_in(key, c)).
  monkeypatch.setattr(sample_quality, "SAMPLE_CHUNK", 16)
  more, fewer = (sample_quality.model_samples(inference, 0, n) for n in (40, 16))
  np.testing.assert_array_equal(more[:16], fewer)
  assert not np.array_equal(more[16:32], fewer)


def test_sample_quality_is_on_request_and_checked(mnist_like_run, tiny_features):
  workdir, dataset = mnist_like_run
  config = tiny_config()
  assert not set(eval_suite.select_metrics(None, config, dataset)) & {"fid", "precision_recall"}
  with pytest.raises(ConfigError, match="'fid' does not apply.*has no prior to sample"):
    eval_suite.select_metrics(["fid"], tiny_config(**{"model.name": "ae"}), dataset)
  check = eval_suite.check_requests
  with pytest.raises(ConfigError, match="need --features_workdir"):
    check(["fid"], eval_suite.EvalOptions(), config, dataset)
  options = eval_suite.EvalOptions(features_workdir=tiny_features[0], sample_quality_n=101)
  with pytest.raises(ConfigError, match="sample_quality_n=101 exceeds the 100 test images"):
    check(["precision_recall"], options, config, dataset)
  options = eval_suite.EvalOptions(features_workdir=tiny_features[0], sample_quality_n=3)
  with pytest.raises(ConfigError, match="sample_quality_n=3 must exceed precision_recall_k=3"):
    check(["precision_recall"], options, config, dataset)
  check(["elbo"], eval_suite.EvalOptions(), config, dataset)  # Nothing to check.


def _cli(module, *args):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def _errors(proc):
  return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_cli_trains_a_dsprites_feature_net_and_evaluates_a_run(tmp_path):
  feats, workdir = str(tmp_path / "feats"), str(tmp_path / "run")
  config = tiny_config(**{"data.name": "dsprites_procedural", "data.num_eval_examples": 40})
  _initial_run(workdir, config, load_dataset(config.data))
  train = ("train", "--dataset=dsprites_procedural", f"--workdir={feats}", "--num_train=256")
  proc = _cli("vae_jax.evaluation.features", *train, "--epochs=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(feats, "feature_net.json")) as f:
    info = json.load(f)
  assert set(info["test_accuracy_per_head"]) == {"shape", "scale", "orientation", "posX", "posY"}
  assert f"test accuracy {info['test_accuracy']:.4f}" in proc.stdout
  again = _cli("vae_jax.evaluation.features", *train, "--epochs=2")
  assert _errors(again) and "trained with" in _errors(again)[0]

  proc = _cli(
    "vae_jax.evaluate",
    f"--workdir={workdir}",
    "--metrics=fid,precision_recall",
    f"--features_workdir={feats}",
    "--sample_quality_n=30",
    "--precision_recall_k=2",
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "fid" in proc.stdout and "feature_net_test_accuracy" in proc.stdout
  with open(os.path.join(workdir, "eval", "results.json")) as f:
    results = json.load(f)
  assert results["precision_recall"]["k"] == 2 and results["fid"]["num_samples"] == 30
  assert results["fid"]["feature_net_test_accuracy"] == info["test_accuracy"]
  assert 0 <= results["precision_recall"]["recall"] <= 1


@pytest.mark.slow
def test_cli_refuses_a_missing_or_foreign_feature_net_with_one_line(tmp_path, tiny_features):
  workdir = str(tmp_path / "run")
  config = tiny_config(**{"data.name": "dsprites_procedural", "data.num_eval_examples": 40})
  _initial_run(workdir, config, load_dataset(config.data))
  proc = _cli("vae_jax.evaluate", f"--workdir={workdir}", "--metrics=fid")
  assert proc.returncode != 0 and len(_errors(proc)) == 1
  assert "need --features_workdir" in _errors(proc)[0]
  foreign = str(tmp_path / "mnist_feats")
  shutil.copytree(tiny_features[0], foreign)
  proc = _cli(
    "vae_jax.evaluate", f"--workdir={workdir}", "--metrics=fid", f"--features_workdir={foreign}"
  )
  assert proc.returncode != 0 and len(_errors(proc)) == 1
  assert "was trained on 'mnist'" in _errors(proc)[0] and "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(workdir, "eval"))
