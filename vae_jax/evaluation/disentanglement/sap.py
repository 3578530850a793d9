"""The Separated Attribute Predictability score (Kumar et al., 2018), as in disentanglement_lib.

A score matrix S [num_codes, num_factors] measures how well each code dimension alone predicts
each factor: for discrete factors (the lib default) the test accuracy of a linear SVM trained on
that one dimension, for continuous ones the squared correlation. SAP averages, over factors, the
gap between the two best code dimensions. Defaults follow
disentanglement_lib/config/unsupervised_study_v1/metric_configs/sap_score.gin and
disentanglement_lib/evaluation/metrics/sap_score.py.
"""

import numpy as np
from sklearn import svm

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation.disentanglement import utils


def compute_sap(
  ground_truth_data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  seed: int,
  num_train: int = 10_000,  # lib default: sap_score.num_train=10000
  num_test: int = 5_000,  # lib default: sap_score.num_test=5000
  batch_size: int = 16,  # lib default: compute_sap(batch_size=16)
  continuous_factors: bool = False,  # lib default: sap_score.continuous_factors=False
) -> dict[str, float]:
  """SAP score of a representation.

  Args:
    ground_truth_data: The dataset whose factors are sampled and rendered.
    representation_fn: uint8 images [n, H, W, C] to codes [n, d], d >= 2.
    seed: All sampling and the classifiers' random state derive from it.
    num_train: Examples the score matrix is fitted on.
    num_test: Examples the classifiers are evaluated on (discrete factors only; the lib samples
      them in the continuous case too, and so does this function, to keep the streams aligned).
    batch_size: Examples encoded per call (does not change the result).
    continuous_factors: Score with squared correlation instead of classification accuracy.

  Returns:
    `sap`.
  """
  codes, factors = utils.sample_codes(
    ground_truth_data, representation_fn, num_train, (seed, utils.SAP, utils.TRAIN), batch_size
  )
  codes_test, factors_test = utils.sample_codes(
    ground_truth_data, representation_fn, num_test, (seed, utils.SAP, utils.TEST), batch_size
  )
  if continuous_factors:
    scores = correlation_scores(codes, factors)
  else:
    scores = classification_scores(
      codes, factors, codes_test, factors_test, utils.sklearn_seed(seed, utils.SAP)
    )
  return {"sap": sap_from_scores(scores)}


def classification_scores(
  codes: np.ndarray,
  factors: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  random_state: int = 0,
) -> np.ndarray:
  """Test accuracy [d, F] of a linear SVM predicting each factor from each single code dim."""
  scores = np.zeros((codes.shape[1], factors.shape[1]))
  for i in range(codes.shape[1]):
    for j in range(factors.shape[1]):
      # lib: svm.LinearSVC(C=0.01, class_weight="balanced"); the strong regularisation is the lib's.
      model = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=random_state)
      model.fit(codes[:, i : i + 1], factors[:, j])
      scores[i, j] = np.mean(model.predict(codes_test[:, i : i + 1]) == factors_test[:, j])
  return scores


def correlation_scores(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """Squared Pearson correlation [d, F] of each code dim with each factor (0 for constant dims)."""
  scores = np.zeros((codes.shape[1], factors.shape[1]))
  for i in range(codes.shape[1]):
    for j in range(factors.shape[1]):
      cov = np.cov(codes[:, i], factors[:, j], ddof=1)
      # lib: dimensions with variance <= 1e-12 score 0.
      if cov[0, 0] > 1e-12:
        scores[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
  return scores


def sap_from_scores(scores: np.ndarray) -> float:
  """Mean over factors of the gap between the best and second-best code dim in `scores` [d, F]."""
  if scores.shape[0] < 2:
    raise ValueError(f"SAP needs at least 2 code dimensions, got {scores.shape[0]}")
  top_two = np.sort(scores, axis=0)[-2:]
  return float(np.mean(top_two[1] - top_two[0]))
