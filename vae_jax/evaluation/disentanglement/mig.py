"""The Mutual Information Gap (Chen et al., 2018), as in disentanglement_lib.

Each code dimension is discretised into equal-width histogram bins; for every factor, the gap
between the two code dimensions sharing the most mutual information with it, divided by the
factor's entropy, is averaged over factors. Defaults follow
disentanglement_lib/config/unsupervised_study_v1/metric_configs/mig.gin and
disentanglement_lib/evaluation/metrics/mig.py.
"""

import numpy as np

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation.disentanglement import utils


def compute_mig(
  ground_truth_data: GroundTruthData,
  representation_fn: utils.RepresentationFn,
  seed: int,
  num_train: int = 10_000,  # lib default: mig.num_train=10000
  batch_size: int = 16,  # lib default: compute_mig(batch_size=16)
  num_bins: int = 20,  # lib default: discretizer.num_bins=20 with histogram_discretizer
) -> dict[str, float]:
  """MIG of a representation on `num_train` sampled examples.

  Args:
    ground_truth_data: The dataset whose factors are sampled and rendered.
    representation_fn: uint8 images [n, H, W, C] to codes [n, d], d >= 2.
    seed: All sampling derives from it.
    num_train: Examples the mutual information is estimated on.
    batch_size: Examples encoded per call (does not change the result).
    num_bins: Histogram bins per code dimension.

  Returns:
    `mig`.
  """
  codes, factors = utils.sample_codes(
    ground_truth_data, representation_fn, num_train, (seed, utils.MIG, utils.TRAIN), batch_size
  )
  return {"mig": mig_from_codes(codes, factors, num_bins)}


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
  """MIG from codes [n, d] and factor indices [n, F]."""
  if codes.shape[1] < 2:
    raise ValueError(f"MIG needs at least 2 code dimensions, got {codes.shape[1]}")
  info = utils.mutual_information(utils.histogram_discretize(codes, num_bins), factors)
  top_two = np.sort(info, axis=0)[-2:]
  return float(np.mean((top_two[1] - top_two[0]) / utils.entropy(factors)))
