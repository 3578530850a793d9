"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams, 2018).

As in disentanglement_lib: a gradient-boosted-trees classifier per factor predicts it from the
code; its feature importances form the matrix R [num_codes, num_factors]. Disentanglement is 1
minus the entropy (base F) of each code's importance over factors, weighted by the code's share of
total importance; completeness is 1 minus the entropy (base d) of each factor's importance over
codes, weighted by the factor's share; informativeness is the classifiers' mean accuracy.
Defaults follow disentanglement_lib/config/unsupervised_study_v1/metric_configs/dci.gin and
disentanglement_lib/evaluation/metrics/dci.py.
"""

import numpy as np
from sklearn import ensemble

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation.disentanglement import utils

# lib: scipy.stats.entropy(importance + 1e-11), which keeps all-zero rows finite.
_EPS = 1e-11


def compute_dci(
  ground_truth_data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  seed: int,
  num_train: int = 10_000,  # lib default: dci.num_train=10000
  num_test: int = 5_000,  # lib default: dci.num_test=5000
  batch_size: int = 16,  # lib default: compute_dci(batch_size=16)
) -> dict[str, float]:
  """DCI scores of a representation.

  Args:
    ground_truth_data: The dataset whose factors are sampled and rendered.
    representation_fn: uint8 images [n, H, W, C] to codes [n, d].
    seed: All sampling and the classifiers' random state derive from it.
    num_train: Examples the classifiers are trained on.
    num_test: Examples the informativeness is measured on.
    batch_size: Examples encoded per call (does not change the result).

  Returns:
    `dci_disentanglement`, `dci_completeness`, `dci_informativeness` (test accuracy) and
    `dci_informativeness_train`.
  """
  train = utils.sample_codes(
    ground_truth_data, representation_fn, num_train, (seed, utils.DCI, utils.TRAIN), batch_size
  )
  test = utils.sample_codes(
    ground_truth_data, representation_fn, num_test, (seed, utils.DCI, utils.TEST), batch_size
  )
  importance, train_accuracy, test_accuracy = importance_gbt(
    *train, *test, random_state=utils.sklearn_seed(seed, utils.DCI)
  )
  return {
    "dci_disentanglement": disentanglement(importance),
    "dci_completeness": completeness(importance),
    "dci_informativeness": test_accuracy,
    "dci_informativeness_train": train_accuracy,
  }


def importance_gbt(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  random_state: int = 0,
) -> tuple[np.ndarray, float, float]:
  """Importance matrix [d, F] and mean train and test accuracy of one GBT per factor."""
  importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
  train_accuracy, test_accuracy = [], []
  for j in range(factors_train.shape[1]):
    # lib: sklearn's default GradientBoostingClassifier; seeded because its splits break ties
    # by a random feature order.
    model = ensemble.GradientBoostingClassifier(random_state=random_state)
    model.fit(codes_train, factors_train[:, j])
    importance[:, j] = np.abs(model.feature_importances_)
    train_accuracy.append(np.mean(model.predict(codes_train) == factors_train[:, j]))
    test_accuracy.append(np.mean(model.predict(codes_test) == factors_test[:, j]))
  return importance, float(np.mean(train_accuracy)), float(np.mean(test_accuracy))


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
  """1 - entropy of p normalised along `axis`, in base p.shape[axis] (so in [0, 1])."""
  p = p + _EPS
  p = p / p.sum(axis=axis, keepdims=True)
  return 1.0 + np.sum(p * np.log(p), axis=axis) / np.log(p.shape[axis])


def _weights(importance: np.ndarray, axis: int) -> np.ndarray:
  """Share of total importance along `axis` (uniform when all importances are zero)."""
  if importance.sum() == 0.0:
    importance = np.ones_like(importance)
  return importance.sum(axis=axis) / importance.sum()


def disentanglement(importance: np.ndarray) -> float:
  """Importance-weighted mean over codes of 1 - H_F(code's importance over factors)."""
  return float(np.sum(_one_minus_entropy(importance, axis=1) * _weights(importance, axis=1)))


def completeness(importance: np.ndarray) -> float:
  """Importance-weighted mean over factors of 1 - H_d(factor's importance over codes)."""
  return float(np.sum(_one_minus_entropy(importance, axis=0) * _weights(importance, axis=0)))
