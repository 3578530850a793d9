"""The FactorVAE disentanglement metric (Kim & Mnih, 2018), as in disentanglement_lib.

One training point: fix a random factor k over a batch, encode it, divide each active code
dimension's batch variance by its global variance and vote (k, argmin dimension). A majority-vote
classifier maps each code dimension to the factor it received most votes for; the score is its
accuracy on fresh votes. Defaults follow
disentanglement_lib/config/unsupervised_study_v1/metric_configs/factor_vae_metric.gin and the
procedure disentanglement_lib/evaluation/metrics/factor_vae.py.
"""

import numpy as np

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation.disentanglement import utils


def compute_factor_vae(
  ground_truth_data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  seed: int,
  batch_size: int = 64,  # lib default: factor_vae_score.batch_size=64
  num_train: int = 10_000,  # lib default: factor_vae_score.num_train=10000
  num_eval: int = 5_000,  # lib default: factor_vae_score.num_eval=5000
  num_variance_estimate: int = 10_000,  # lib default: factor_vae_score.num_variance_estimate=10000
  prune_threshold: float = 0.05,  # lib default: prune_dims.threshold=0.05 (on the global std)
  variance_batch_size: int = 64,  # lib default: _compute_variances(eval_batch_size=64)
) -> dict[str, float]:
  """FactorVAE metric: majority-vote accuracy of the least-varying normalised dimension.

  Args:
    ground_truth_data: The dataset whose factors are sampled and rendered.
    representation_fn: uint8 images [n, H, W, C] to codes [n, d].
    seed: All sampling derives from it.
    batch_size: Examples sharing the fixed factor in one vote.
    num_train: Votes that build the majority-vote classifier.
    num_eval: Votes it is evaluated on.
    num_variance_estimate: Examples for the global variance of each code dimension.
    prune_threshold: Dimensions whose global standard deviation is below it are collapsed (not
      active) and never voted for.
    variance_batch_size: Examples encoded per call while estimating the global variance.

  Returns:
    `factor_vae_accuracy` (evaluation accuracy), `factor_vae_train_accuracy` and
    `factor_vae_num_active_dims`. All are 0 when no dimension is active.
  """
  factors = ground_truth_data.sample_factors(
    num_variance_estimate, (seed, utils.FACTOR_VAE, utils.VARIANCE)
  )
  codes = utils.encode(ground_truth_data, representation_fn, factors, variance_batch_size)
  global_variances = np.var(codes, axis=0, ddof=1)
  active = np.sqrt(global_variances) >= prune_threshold
  # The lib reports len() of its boolean mask (always all dims); this is the active count.
  num_active = int(active.sum())
  if num_active == 0:
    return {
      "factor_vae_accuracy": 0.0,
      "factor_vae_train_accuracy": 0.0,
      "factor_vae_num_active_dims": 0,
    }
  args = (ground_truth_data, representation_fn, batch_size, seed, global_variances, active)
  train_votes = _votes(*args, num_train, utils.TRAIN)
  classifier = np.argmax(train_votes, axis=0)
  eval_votes = _votes(*args, num_eval, utils.TEST)
  return {
    "factor_vae_accuracy": _accuracy(eval_votes, classifier),
    "factor_vae_train_accuracy": _accuracy(train_votes, classifier),
    "factor_vae_num_active_dims": num_active,
  }


def _accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
  """Fraction of votes [F, d] whose factor is the one `classifier` [d] assigns to their dim."""
  return float(votes[classifier, np.arange(votes.shape[1])].sum() / votes.sum())


def _votes(
  data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  batch_size: int,
  seed: int,
  global_variances: np.ndarray,
  active: np.ndarray,
  num_points: int,
  stream: int,
) -> np.ndarray:
  """Vote counts [num_factors, num_codes]: (fixed factor, argmin normalised variance dim)."""
  labels = utils.stream_rng(seed, utils.FACTOR_VAE, stream).integers(
    utils.num_factors(data), size=num_points
  )
  active_dims = np.flatnonzero(active)
  votes = np.zeros((utils.num_factors(data), len(global_variances)), dtype=np.int64)
  for i, k in enumerate(labels):
    factors = data.sample_factors(batch_size, (seed, utils.FACTOR_VAE, stream, i))
    factors[:, k] = factors[0, k]
    codes = utils.encode(data, representation_fn, factors, batch_size)
    local_variances = np.var(codes[:, active_dims], axis=0, ddof=1)
    # lib: local / global variance, the variance of codes rescaled by their global std.
    votes[k, active_dims[np.argmin(local_variances / global_variances[active_dims])]] += 1
  return votes
