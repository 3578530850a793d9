"""TensorBoard images of a model: reconstructions, prior samples and latent traversals."""

import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import model_fns
from vae_jax.visualize import image_grid


def _test_inputs(dataset, n: int) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  x = jnp.asarray(dataset.test_images[:n], jnp.float32) / 255.0
  y = None if not dataset.num_classes else jnp.asarray(dataset.test_labels[:n])
  return x, y


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
  model,
  model_vars,
  x,
  y,
  kl_per_dim: np.ndarray | None,
  likelihood: str,
  num_values: int = 10,
  max_rows: int = 32,
) -> np.ndarray:
  """One grid per input: row r sweeps the r-th most informative latent over [-3, 3].

  The other latents stay at the input's posterior mean; rows are ordered by decreasing KL (by
  dimension index when the model reports no KL per dimension), at most `max_rows` of them.

  Returns:
    [num_inputs, H', W', C] grid images.
  """
  mu = model_fns.posterior_mean(model, model_vars, x, y)
  dims = traversal_dims(kl_per_dim, mu.shape[-1], max_rows)
  values = jnp.linspace(-3.0, 3.0, num_values)
  grids = []
  for i in range(len(x)):
    z = jnp.tile(mu[i], (len(dims), num_values, 1))
    z = z.at[np.arange(len(dims))[:, None], np.arange(num_values)[None, :], dims[:, None]].set(
      values[None, :]
    )
    yi = None if y is None else jnp.full((z.shape[0] * num_values,), y[i])
    images = model_fns.decode_mean(model, model_vars, z.reshape(-1, z.shape[-1]), likelihood, yi)
    grids.append(image_grid(np.asarray(images), ncol=num_values))
  return np.stack(grids)


def model_images(
  model, model_vars, dataset, config: ml_collections.ConfigDict, rng, kl_per_dim: np.ndarray | None
) -> dict[str, np.ndarray]:
  """Image summaries keyed by TensorBoard tag, each [N, H, W, C] in [0, 1]."""
  likelihood = config.model.likelihood
  x, y = _test_inputs(dataset, config.num_image_examples)
  recon = model_fns.reconstruct(model, model_vars, x, likelihood, y)
  images = {"reconstructions": image_grid(np.concatenate([x, recon]), ncol=len(x))[None]}
  if not model_fns.has_prior(model):
    return images
  m = config.num_prior_samples
  labels = jnp.arange(m) % dataset.num_classes if dataset.num_classes else None
  samples = model_fns.prior_samples(model, model_vars, rng, m, likelihood, labels)
  images["prior_samples"] = image_grid(samples, ncol=int(np.ceil(np.sqrt(m))))[None]
  n = config.num_traversal_inputs
  images["traversals"] = traversal_grids(
    model, model_vars, x[:n], None if y is None else y[:n], kl_per_dim, likelihood
  )
  return images
