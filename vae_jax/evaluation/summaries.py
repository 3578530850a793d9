"""TensorBoard images of a model: reconstructions, prior samples and latent traversals.

All model calls go through `inference.Inference` (jitted, over the mesh), and the inputs shown are
the ones the encoder sees (thresholded when the run thresholds).
"""

import jax
import ml_collections
import numpy as np

from vae_jax.evaluation.images import image_grid
from vae_jax.evaluation.inference import Inference


def traversal_dims(kl_per_dim: np.ndarray | None, code_dim: int, max_rows: int) -> np.ndarray:
  """The code dimensions to traverse: by decreasing KL when known, at most `max_rows`.

  A hierarchical model lists its top layer (the code) first in `kl_per_dim`, so only the first
  `code_dim` entries are used; a KL that does not cover the code (e.g. one per VQ position) is
  ignored.
  """
  kl = None if kl_per_dim is None else np.asarray(kl_per_dim)
  if kl is None or kl.shape[-1] < code_dim:
    return np.arange(min(code_dim, max_rows))
  return np.argsort(-kl[:code_dim], kind="stable")[:max_rows]


def traversal_grids(
  inference: Inference,
  images: np.ndarray,
  labels: np.ndarray | None,
  kl_per_dim: np.ndarray | None,
  num_values: int = 10,
  max_rows: int = 32,
) -> np.ndarray:
  """One grid per input: row r sweeps the r-th most informative latent over [-3, 3].

  The other latents stay at the input's posterior mean; rows are ordered by decreasing KL (by
  dimension index when the model reports no KL per dimension), at most `max_rows` of them. A
  categorical latent (`codes.CategoricalCodes`) takes each of its classes instead of the values.

  Returns:
    [num_inputs, H', W', C] grid images.
  """
  space = inference.model.code_space()
  mu = inference.posterior_means(images, labels)
  dims = traversal_dims(kl_per_dim, space.num_latents(mu.shape[-1]), max_rows)
  values = np.linspace(-3.0, 3.0, num_values, dtype=np.float32)
  z = space.traversal(mu, dims, values)
  flat = z.reshape(-1, mu.shape[-1])
  y = None if labels is None else np.repeat(labels, z.shape[1] * z.shape[2])
  decoded = inference.decode(flat, y).reshape(len(images), -1, *images.shape[1:])
  return np.stack([image_grid(grid, ncol=z.shape[2]) for grid in decoded])


def model_images(
  model,
  model_vars: dict,
  dataset,
  config: ml_collections.ConfigDict,
  rng: jax.Array,
  mesh: jax.sharding.Mesh,
  eval_metrics: dict | None = None,
) -> dict[str, np.ndarray]:
  """Image summaries keyed by TensorBoard tag, each [N, H, W, C] in [0, 1].

  `eval_metrics` (the evaluation's `kl_per_dim`) orders the traversal rows.
  """
  inference = Inference(model, model_vars, config, mesh)
  n = config.num_image_examples
  images = dataset.test_images[:n]
  labels = None if not dataset.num_classes else dataset.test_labels[:n]
  x = inference.inputs(images)
  recon = inference.reconstruct(x, labels)
  out = {"reconstructions": image_grid(np.concatenate([x, recon]), ncol=len(x))[None]}
  if not model.capabilities.prior:
    return out
  m = config.num_prior_samples
  sample_labels = np.arange(m) % dataset.num_classes if dataset.num_classes else None
  samples = inference.prior_samples(rng, m, sample_labels)
  out["prior_samples"] = image_grid(samples, ncol=int(np.ceil(np.sqrt(m))))[None]
  k = config.num_traversal_inputs
  kl = None if eval_metrics is None else eval_metrics.get("kl_per_dim")
  out["traversals"] = traversal_grids(
    inference, images[:k], None if labels is None else labels[:k], kl
  )
  return out
