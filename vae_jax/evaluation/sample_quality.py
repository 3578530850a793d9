"""Sample quality in a feature network's space: FID and improved precision/recall.

Both compare N images drawn from the model's own sampler (`Model.generate`, decoded means clipped
to [0, 1]) with N test images, each mapped to the penultimate layer of a classifier trained on the
run's dataset (`evaluation.features`).

- `fid`: the Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al.
  2017), ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).
- `precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019). Each feature
  vector gets a ball reaching its k-th nearest neighbour within its own set; precision is the
  share of generated vectors inside some real vector's ball, recall the share of real vectors
  inside some generated vector's ball.

Pairwise distances are computed in jitted row chunks, so N x N never has to fit in memory.
"""

import functools
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.errors import ConfigError
from vae_jax.evaluation import features as feature_nets
from vae_jax.evaluation.inference import Inference
from vae_jax.training.keys import run_keys

GROUPS = ("fid", "precision_recall")
# Samples per `generate` call; chunk c is keyed fold_in(key, c), so N and N' share their first
# min(N, N') // SAMPLE_CHUNK chunks.
SAMPLE_CHUNK = 500
DISTANCE_CHUNK = 1000  # Query rows per pairwise-distance call.
_SAMPLE_TAG = zlib.crc32(b"sample_quality")


def gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [d] and unbiased covariance [d, d] (float64) of the rows of x [n, d]."""
  x = np.asarray(x, np.float64)
  return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((sigma + sigma.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

  tr (S1 S2)^(1/2) is computed as tr (S1^(1/2) S2 S1^(1/2))^(1/2): the matrix inside is symmetric
  positive semi-definite, so its eigenvalues are real and >= 0 (up to rounding, clipped), and no
  complex square root arises even when a covariance is singular.
  """
  root = _psd_sqrt(np.asarray(sigma1, np.float64))
  inner = root @ np.asarray(sigma2, np.float64) @ root
  eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
  trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
  diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid(real: np.ndarray, generated: np.ndarray) -> float:
  """The Fréchet distance between Gaussian fits of two feature sets [n, d] and [m, d]."""
  return frechet_distance(*gaussian_fit(real), *gaussian_fit(generated))


def _squared_distances(q: jax.Array, ref: jax.Array) -> jax.Array:
  q2 = jnp.sum(q * q, axis=1)[:, None]
  r2 = jnp.sum(ref * ref, axis=1)[None, :]
  return jnp.maximum(q2 + r2 - 2.0 * q @ ref.T, 0.0)


@functools.partial(jax.jit, static_argnums=(2,))
def _kth_squared(q: jax.Array, ref: jax.Array, k: int) -> jax.Array:
  # The k + 1 smallest include the query itself (distance 0): index k is its k-th neighbour.
  smallest = -jax.lax.top_k(-_squared_distances(q, ref), k + 1)[0]
  return smallest[:, k]


@jax.jit
def _inside_any(q: jax.Array, ref: jax.Array, radii2: jax.Array) -> jax.Array:
  return jnp.any(_squared_distances(q, ref) <= radii2[None, :], axis=1)


def _chunked(fn, queries: np.ndarray, chunk: int) -> np.ndarray:
  """fn over row chunks of `queries`, the last padded to `chunk` rows (one compilation)."""
  parts = []
  for start in range(0, len(queries), chunk):
    part = queries[start : start + chunk]
    keep = len(part)
    part = np.concatenate([part, np.zeros((chunk - keep, part.shape[1]), part.dtype)])
    parts.append(np.asarray(fn(jnp.asarray(part)))[:keep])
  return np.concatenate(parts)


def knn_radii(x: np.ndarray, k: int, chunk: int = DISTANCE_CHUNK) -> np.ndarray:
  """Distance [n] from each row of x [n, d] to its k-th nearest other row."""
  x = np.asarray(x, np.float32)
  ref = jnp.asarray(x)
  chunk = min(chunk, len(x))
  return np.sqrt(_chunked(lambda q: _kth_squared(q, ref, k), x, chunk))


def coverage(queries: np.ndarray, reference: np.ndarray, radii: np.ndarray, chunk=DISTANCE_CHUNK):
  """Share of `queries` rows within `radii[j]` of some `reference[j]`."""
  ref = jnp.asarray(reference, jnp.float32)
  radii2 = jnp.asarray(np.square(radii), jnp.float32)
  queries = np.asarray(queries, np.float32)
  chunk = min(chunk, len(queries))
  return float(_chunked(lambda q: _inside_any(q, ref, radii2), queries, chunk).mean())


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3, chunk=DISTANCE_CHUNK):
  """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets [n, d], [m, d]."""
  precision = coverage(generated, real, knn_radii(real, k, chunk), chunk)
  recall = coverage(real, generated, knn_radii(generated, k, chunk), chunk)
  return {"precision": precision, "recall": recall}


def check(workdir, data_name: str, image_shape, n: int | None, available: int, k: int) -> None:
  """Checks, before anything is compiled, that the groups can run as asked.

  Args:
    workdir: --features_workdir.
    data_name: the run's data.name.
    image_shape: the run's images' (H, W, C).
    n: samples asked for (None: `available`).
    available: test images evaluated.
    k: precision_recall's k.

  Raises:
    ConfigError: no feature network for the run's data, or too many or too few samples.
  """
  feature_nets.check(workdir, data_name, image_shape)
  n = n or available
  if n > available:
    raise ConfigError(
      f"sample_quality_n={n} exceeds the {available} test images evaluated; give at most "
      f"{available} (or more --num_examples)."
    )
  if n <= k:
    raise ConfigError(f"sample_quality_n={n} must exceed precision_recall_k={k}.")


def sample_key(seed: int) -> jax.Array:
  """The samples' key: fold_in(run_keys(seed)['sample'], crc32('sample_quality'))."""
  return jax.random.fold_in(run_keys(seed)["sample"], _SAMPLE_TAG)


def model_samples(inference: Inference, seed: int, n: int, labels=None) -> np.ndarray:
  """`n` prior samples in [0, 1], SAMPLE_CHUNK at a time; a conditional model gets `labels`."""
  key, parts = sample_key(seed), []
  for c, start in enumerate(range(0, n, SAMPLE_CHUNK)):
    num = min(SAMPLE_CHUNK, n - start)
    y = None if labels is None else np.resize(labels, n)[start : start + num]
    parts.append(inference.prior_samples(jax.random.fold_in(key, c), num, y))
  return np.clip(np.concatenate(parts), 0.0, 1.0)


def feature_sets(
  inference: Inference, images: np.ndarray, labels, seed: int, n: int, workdir: str
) -> dict:
  """Features of the first `n` test images and of `n` model samples, with the network's record."""
  start = time.time()
  network = feature_nets.load(workdir)
  samples = model_samples(inference, seed, n, labels)
  real = network.features(np.asarray(images[:n], np.float32) / 255.0)
  return {
    "real": real,
    "generated": network.features(samples),
    "info": network.info,
    "seconds": time.time() - start,
  }


def scores(group: str, sets: dict, k: int, workdir: str) -> dict:
  """The values of `fid` or `precision_recall` on `feature_sets`' output."""
  start = time.time()
  if group == "fid":
    values = {"fid": fid(sets["real"], sets["generated"])}
  else:
    values = precision_recall(sets["real"], sets["generated"], k) | {"k": k}
  info = sets["info"]
  return values | {
    "num_samples": len(sets["generated"]),
    "num_examples": len(sets["real"]),
    "feature_dim": int(sets["real"].shape[1]),
    "features_workdir": workdir,
    "feature_net_dataset": info["dataset"],
    "feature_net_test_accuracy": info["test_accuracy"],
    "feature_net_test_accuracy_per_head": info["test_accuracy_per_head"],
    "seconds": sets["seconds"] + time.time() - start,
  }
