"""The yardstick of experiments/vqvae_prior: the confident share and its class counts."""

import numpy as np

from experiments.vqvae_prior import classify


def test_confident_counts_only_rows_above_the_threshold_by_their_top_class():
  probs = np.full((4, 10), 0.01)
  probs[0, 3] = 0.95  # confident 3
  probs[1, 7] = 0.91  # confident 7
  probs[2, 7] = 0.90  # not above 0.9
  probs[3, 1] = 0.50
  got = classify.confident(probs, 0.9)
  assert got["confident_share"] == 0.5
  assert got["confident_class_counts"] == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
