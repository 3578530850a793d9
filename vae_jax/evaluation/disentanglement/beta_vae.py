"""The BetaVAE disentanglement metric (Higgins et al., 2017), as in disentanglement_lib.

One training point: pick a factor k, draw two batches of factor vectors that agree on factor k,
encode both and average |z1 - z2| over the batch. A linear classifier then predicts k from that
feature vector; the score is its accuracy on fresh points. Defaults follow
disentanglement_lib/config/unsupervised_study_v1/metric_configs/beta_vae_sklearn.gin and the
classifier follows disentanglement_lib/evaluation/metrics/beta_vae.py.
"""

import numpy as np
from sklearn import linear_model

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation.disentanglement import utils


def compute_beta_vae(
  ground_truth_data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  seed: int,
  batch_size: int = 64,  # lib default: beta_vae_sklearn.batch_size=64
  num_train: int = 10_000,  # lib default: beta_vae_sklearn.num_train=10000
  num_eval: int = 5_000,  # lib default: beta_vae_sklearn.num_eval=5000
) -> dict[str, float]:
  """BetaVAE metric: accuracy of predicting the fixed factor from mean |z1 - z2|.

  Args:
    ground_truth_data: The dataset whose factors are sampled and rendered.
    representation_fn: uint8 images [n, H, W, C] to codes [n, d].
    seed: All sampling and the classifier's random state derive from it.
    batch_size: Pairs of examples averaged into one feature vector.
    num_train: Feature vectors the classifier is trained on.
    num_eval: Feature vectors it is evaluated on.

  Returns:
    `beta_vae_accuracy` (evaluation accuracy) and `beta_vae_train_accuracy`.
  """
  train_x, train_y = _features(
    ground_truth_data, representation_fn, batch_size, num_train, seed, utils.TRAIN
  )
  # lib: sklearn's default LogisticRegression, seeded.
  model = linear_model.LogisticRegression(random_state=utils.sklearn_seed(seed, utils.BETA_VAE))
  model.fit(train_x, train_y)
  eval_x, eval_y = _features(
    ground_truth_data, representation_fn, batch_size, num_eval, seed, utils.TEST
  )
  return {
    "beta_vae_accuracy": float(model.score(eval_x, eval_y)),
    "beta_vae_train_accuracy": float(model.score(train_x, train_y)),
  }


def _features(
  data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  batch_size: int,
  num_points: int,
  seed: int,
  stream: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Feature vectors [num_points, d] and the index of the factor each one kept fixed."""
  labels = utils.stream_rng(seed, utils.BETA_VAE, stream).integers(
    utils.num_factors(data), size=num_points
  )
  features = []
  for i, k in enumerate(labels):
    factors = data.sample_factors(2 * batch_size, (seed, utils.BETA_VAE, stream, i))
    factors[batch_size:, k] = factors[:batch_size, k]
    codes = utils.encode(data, representation_fn, factors, 2 * batch_size)
    features.append(np.mean(np.abs(codes[:batch_size] - codes[batch_size:]), axis=0))
  return np.stack(features), labels
