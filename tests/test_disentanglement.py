"""Disentanglement metrics and latent diagnostics on a tiny synthetic ground-truth dataset."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as metrics_lib

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation import diagnostics
from vae_jax.evaluation import disentanglement as metrics
from vae_jax.evaluation.disentanglement import dci, mig, sap, utils

FACTOR_SIZES = (3, 5, 4)

# Sample counts far below the lib defaults so that the file runs in seconds; SAP is cheap enough to
# run at its defaults.
SMALL = {
  "beta_vae": {"batch_size": 16, "num_train": 500, "num_eval": 1000},
  "factor_vae": {
    "batch_size": 16,
    "num_train": 500,
    "num_eval": 1000,
    "num_variance_estimate": 1000,
  },
  "mig": {"num_train": 2000, "batch_size": 500},
  "dci": {"num_train": 500, "num_test": 500, "batch_size": 250},
  "sap": {"batch_size": 1000},
}


class TinyFactors(GroundTruthData):
  """Three factors; the 'image' is a 1x1 pixel whose 3 channels are the factor indices."""

  factor_names = ("a", "b", "c")
  factor_sizes = FACTOR_SIZES
  image_shape = (1, 1, 3)

  def render(self, factors: np.ndarray) -> np.ndarray:
    return np.asarray(factors, dtype=np.uint8).reshape(-1, 1, 1, 3)


def factor_code(noise: float = 1e-3, seed: int = 0, extra_dims: int = 0):
  """Codes = the factor indices plus Gaussian noise, then `extra_dims` constant dimensions."""
  rng = np.random.default_rng(seed)

  def fn(images):
    codes = images.reshape(len(images), 3).astype(np.float64)
    codes = codes + noise * rng.standard_normal(codes.shape)
    return np.concatenate([codes, np.zeros((len(codes), extra_dims))], axis=1)

  return fn


def noise_code(dims: int = 3, seed: int = 0):
  """Codes independent of the images."""
  rng = np.random.default_rng(seed)
  return lambda images: rng.standard_normal((len(images), dims))


def entangled_code(seed: int = 0):
  """Codes mixing the factors linearly, plus noise: MIG strictly between 0 and 1."""
  rng = np.random.default_rng(seed)
  mixing = np.array([[1.0, 0.3, 0.0, 0.5], [0.2, 1.0, 0.4, 0.0], [0.0, 0.5, 1.0, 0.3]])

  def fn(images):
    codes = images.reshape(len(images), 3).astype(np.float64) @ mixing
    return codes + 0.3 * rng.standard_normal(codes.shape)

  return fn


def run(name, representation_fn, seed=0, **overrides):
  return metrics.DISENTANGLEMENT_METRICS[name](
    TinyFactors(), representation_fn, seed, **{**SMALL[name], **overrides}
  )


def test_registry_names():
  assert list(metrics.DISENTANGLEMENT_METRICS) == ["beta_vae", "factor_vae", "mig", "dci", "sap"]


def test_factors_as_code_score_near_one():
  scores = metrics.evaluate_disentanglement(TinyFactors(), factor_code(), 0, **SMALL)
  assert scores["beta_vae_accuracy"] >= 0.95
  assert scores["beta_vae_train_accuracy"] >= 0.95
  assert scores["factor_vae_accuracy"] >= 0.95
  assert scores["factor_vae_num_active_dims"] == 3
  # MIG < 1 only by the plug-in estimator's positive bias on the unrelated dims (~1e-3 here).
  assert scores["mig"] >= 0.99
  assert scores["dci_disentanglement"] >= 0.9
  assert scores["dci_completeness"] >= 0.9
  assert scores["dci_informativeness"] >= 0.95
  # SAP subtracts the second-best dimension's accuracy, which for an unrelated dimension is chance
  # (1 / size, with balanced class weights), not 0: the ceiling is mean(1 - 1 / size) = 0.739. The
  # lib's strong regularisation (C=0.01) also lets the 5-valued factor lose a class (0.81 accuracy).
  ceiling = np.mean([1 - 1 / size for size in FACTOR_SIZES])
  assert 0.6 <= scores["sap"] <= ceiling + 0.02


def test_noise_scores_near_chance():
  scores = metrics.evaluate_disentanglement(TinyFactors(), noise_code(), 0, **SMALL)
  chance = 1 / len(FACTOR_SIZES)
  assert abs(scores["beta_vae_accuracy"] - chance) < 0.07
  assert abs(scores["factor_vae_accuracy"] - chance) < 0.07
  assert scores["mig"] < 0.05
  assert scores["dci_disentanglement"] < 0.1
  assert scores["dci_informativeness"] < 0.4
  assert scores["sap"] < 0.05


def test_sap_continuous_factors():
  assert run("sap", factor_code(), continuous_factors=True)["sap"] >= 0.99
  assert run("sap", noise_code(), continuous_factors=True)["sap"] < 0.01


def test_factor_vae_ignores_collapsed_dims():
  scores = run("factor_vae", factor_code(extra_dims=2))
  assert scores["factor_vae_num_active_dims"] == 3
  assert scores["factor_vae_accuracy"] >= 0.95


def test_factor_vae_all_dims_collapsed():
  scores = run("factor_vae", lambda images: np.zeros((len(images), 4)))
  assert scores == {
    "factor_vae_accuracy": 0.0,
    "factor_vae_train_accuracy": 0.0,
    "factor_vae_num_active_dims": 0,
  }


def test_mig_invariant_to_permutation_and_rescaling():
  base = run("mig", entangled_code())["mig"]
  assert 0.05 < base < 0.9
  permutation, scales = np.array([2, 0, 3, 1]), np.array([3.0, -0.5, 1e-3, -7.0])

  code = entangled_code()
  transformed = run("mig", lambda images: code(images)[:, permutation] * scales[permutation])
  assert transformed["mig"] == pytest.approx(base, abs=1e-9)


def test_mig_does_not_depend_on_batch_size():
  scores = [run("mig", entangled_code(), batch_size=b)["mig"] for b in (7, 2000)]
  assert scores[0] == scores[1]


@pytest.mark.parametrize("name", list(metrics.DISENTANGLEMENT_METRICS))
def test_deterministic_for_a_seed_and_changes_with_it(name):
  def noisy():
    return factor_code(noise=1.0, seed=3)

  first, again, other = run(name, noisy(), 0), run(name, noisy(), 0), run(name, noisy(), 1)
  assert first == again
  assert first != other


def test_evaluate_disentanglement_routes_overrides():
  scores = metrics.evaluate_disentanglement(
    TinyFactors(), factor_code(), 0, metrics=("mig", "sap"), num_train=500, sap={"num_test": 200}
  )
  assert set(scores) == {"mig", "sap"}
  assert scores["mig"] == run("mig", factor_code(), num_train=500, batch_size=16)["mig"]
  with pytest.raises(ValueError, match="Unknown metrics"):
    metrics.evaluate_disentanglement(TinyFactors(), factor_code(), 0, metrics=("irs",))
  with pytest.raises(ValueError, match="accepts"):
    metrics.evaluate_disentanglement(TinyFactors(), factor_code(), 0, metrics=("mig",), num_eval=5)


def test_information_helpers():
  rng = np.random.default_rng(0)
  y = np.stack([np.arange(1000) % 4, rng.integers(0, 2, 1000)], axis=1)
  np.testing.assert_allclose(utils.entropy(y)[0], math.log(4))
  info = utils.mutual_information(y, y)
  np.testing.assert_allclose(np.diag(info), utils.entropy(y))
  assert info[0, 1] < 0.01
  x = rng.integers(0, 6, (1000, 1)) // np.array([1, 2])
  expected = [[metrics_lib.mutual_info_score(x[:, i], y[:, j]) for j in range(2)] for i in range(2)]
  np.testing.assert_allclose(utils.mutual_information(x, y), expected, atol=1e-12)
  codes = np.array([[0.0], [0.49], [0.5], [1.0]])
  np.testing.assert_array_equal(utils.histogram_discretize(codes, 2)[:, 0], [1, 1, 2, 2])


def test_dci_and_sap_scores_of_known_matrices():
  importance = np.random.default_rng(0).uniform(size=(4, 3))
  weights = importance.sum(1) / importance.sum()
  expected = np.sum((1 - stats.entropy(importance.T, base=3)) * weights)
  assert dci.disentanglement(importance) == pytest.approx(expected, abs=1e-9)
  assert dci.disentanglement(np.eye(3)) == pytest.approx(1.0)
  assert dci.completeness(np.eye(3)) == pytest.approx(1.0)
  assert dci.disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-9)
  # One code explains both factors: perfectly complete, not disentangled.
  importance = np.array([[1.0, 1.0], [0.0, 0.0]])
  assert dci.disentanglement(importance) == pytest.approx(0.0, abs=1e-9)
  assert dci.completeness(importance) == pytest.approx(1.0)
  assert sap.sap_from_scores(np.array([[0.9, 0.2], [0.4, 0.6]])) == pytest.approx(0.45)
  with pytest.raises(ValueError, match="2 code dimensions"):
    mig.mig_from_codes(np.zeros((4, 1)), np.zeros((4, 1), dtype=int))


def test_active_units_on_known_covariance():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((500, 3))
  z = (z - z.mean(0)) / z.std(0) * np.sqrt([1.0, 0.5, 0.001]) + np.array([5.0, -1.0, 2.0])
  result = diagnostics.active_units(z)
  assert result["num_active"] == 2
  np.testing.assert_array_equal(result["active"], [True, True, False])
  np.testing.assert_allclose(result["variances"], [1.0, 0.5, 0.001])
  assert diagnostics.active_units(z, threshold=1e-4)["num_active"] == 3


def test_posterior_summary_analytic_kl():
  mu = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
  logvar = np.array([[0.0, 0.0, math.log(2.0)], [0.0, 0.0, math.log(2.0)]])
  summary = diagnostics.posterior_summary(mu, logvar)
  # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2.
  expected = [0.5, (0.0 + 2.0) / 2, 0.5 * (2.0 - 1.0 - math.log(2.0))]
  np.testing.assert_allclose(summary["kl_per_dim"], expected)
  assert summary["kl"] == pytest.approx(sum(expected))
  np.testing.assert_allclose(summary["mean_variance_per_dim"], [1.0, 1.0, 2.0])
  assert summary["mean_variance"] == pytest.approx(4.0 / 3.0)
