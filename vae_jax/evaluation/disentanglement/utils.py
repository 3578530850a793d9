"""Helpers shared by the disentanglement metrics: seeded sampling of codes, discretisation, entropy.

Every random draw is keyed by `(seed, metric_id, stream, ...)`, so a metric's result depends only on
its seed and arguments, never on global random state or on how the representation is batched.
Codes are laid out [num_points, num_codes] and factors [num_points, num_factors] (sklearn's layout,
the transpose of disentanglement_lib's).
"""

from collections.abc import Callable, Sequence

import numpy as np

from vae_jax.data.ground_truth import GroundTruthData

RepresentationFn = Callable[[np.ndarray], np.ndarray]

# Metric ids and streams: the second and third integers of every key.
BETA_VAE, FACTOR_VAE, MIG, DCI, SAP = 1, 2, 3, 4, 5
TRAIN, TEST, VARIANCE, MODEL = 0, 1, 2, 3


def num_factors(data: GroundTruthData) -> int:
  """Number of factors of variation."""
  return len(data.factor_sizes)


def stream_rng(seed: int, metric_id: int, stream: int) -> np.random.Generator:
  """The generator for one metric's stream (e.g. the labels of its training points)."""
  return np.random.default_rng((seed, metric_id, stream))


def sklearn_seed(seed: int, metric_id: int) -> int:
  """An int `random_state` for a metric's scikit-learn models (their tie-breaking is random)."""
  return int(stream_rng(seed, metric_id, MODEL).integers(2**31 - 1))


def encode(
  data: GroundTruthData,
  representation_fn: RepresentationFn,
  factors: np.ndarray,
  batch_size: int,
) -> np.ndarray:
  """Codes [n, num_codes] (float64) of the images rendered from `factors` [n, F].

  Images are rendered and encoded `batch_size` at a time, so memory stays bounded.
  """
  codes = []
  for start in range(0, len(factors), batch_size):
    images = data.render(factors[start : start + batch_size])
    codes.append(np.asarray(representation_fn(images), dtype=np.float64))
  codes = np.concatenate(codes, axis=0)
  if codes.ndim != 2 or codes.shape[0] != len(factors):
    raise ValueError(f"representation_fn must return [n, d] codes; got shape {codes.shape}")
  return codes


def sample_codes(
  data: GroundTruthData,
  representation_fn: RepresentationFn,
  num_points: int,
  key: Sequence[int],
  batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """`num_points` factors drawn with `key` and their codes: (codes [n, d], factors [n, F])."""
  factors = data.sample_factors(num_points, tuple(key))
  return encode(data, representation_fn, factors, batch_size), factors


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
  """Each code dimension mapped to the index (1..num_bins) of its equal-width histogram bin.

  Bins span each dimension's own [min, max]; the maximum falls in the last bin.
  """
  codes = np.asarray(codes)
  discretized = np.empty(codes.shape, dtype=np.int64)
  for i in range(codes.shape[1]):
    edges = np.histogram_bin_edges(codes[:, i], num_bins)
    discretized[:, i] = np.digitize(codes[:, i], edges[:-1])
  return discretized


def _joint_distribution(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Empirical joint distribution [|x values|, |y values|] of two discrete vectors."""
  x_values, x_index = np.unique(x, return_inverse=True)
  y_values, y_index = np.unique(y, return_inverse=True)
  counts = np.bincount(
    x_index * len(y_values) + y_index, minlength=len(x_values) * len(y_values)
  ).reshape(len(x_values), len(y_values))
  return counts / len(x)


def mutual_information(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Plug-in mutual information (nats) [d, F] between discrete columns x [n, d] and y [n, F]."""
  info = np.zeros((x.shape[1], y.shape[1]))
  for i in range(x.shape[1]):
    for j in range(y.shape[1]):
      p = _joint_distribution(x[:, i], y[:, j])
      outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
      nonzero = p > 0
      info[i, j] = np.sum(p[nonzero] * np.log(p[nonzero] / outer[nonzero]))
  return info


def entropy(y: np.ndarray) -> np.ndarray:
  """Plug-in entropy (nats) [F] of each discrete column of y [n, F]."""
  result = np.zeros(y.shape[1])
  for j in range(y.shape[1]):
    _, counts = np.unique(y[:, j], return_counts=True)
    p = counts / len(y)
    result[j] = -np.sum(p * np.log(p))
  return result
