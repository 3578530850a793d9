"""Jitted, batched, device-parallel calls of a trained model: what evaluation and tools run.

`Inference(model, model_vars, config, mesh)` encodes uint8 images, decodes latents, reconstructs,
samples the prior and computes per-example ELBO terms and importance-weighted log-likelihoods.
Inputs of any length go through in batches whose sizes come from a few buckets (powers of two up
to `batch_size`, rounded to a multiple of the mesh), padded and sharded over the mesh's data axis,
so a command compiles each function once or twice whatever it asks. The compiled functions are
cached by (model, settings) across `Inference` objects.

Encoder inputs are the deterministic version of what training saw: [0, 1] intensities,
thresholded when the run thresholds (a dynamically binarized run gets the intensities, the mean of
its Bernoulli inputs).
"""

import dataclasses
import functools
import json
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax.data.preprocess import preprocess
from vae_jax.evaluation import likelihood
from vae_jax.losses.likelihoods import decoder_mean
from vae_jax.models import Model, Posterior
from vae_jax.training import mesh as meshes
from vae_jax.training import steps
from vae_jax.training.keys import index_keys, split_example_keys
from vae_jax.training.state import model_state_of

BATCH_SIZE = 500


def deterministic_binarization(data: ml_collections.ConfigDict) -> tuple[str, float]:
  """(binarize, threshold) of the deterministic inputs: thresholding kept, dynamic dropped."""
  binarize = "threshold" if data.binarize == "threshold" else "none"
  return binarize, float(data.binarize_threshold)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _encode(model, model_vars, images, y, binarize, threshold) -> Posterior:
  x = preprocess(images, None, binarize, threshold)
  return model.apply(model_vars, x, y, method=model.encode)


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _encode_evaluated(model, model_vars, images, y, index, rng, binarize, threshold) -> Posterior:
  data_keys, _ = split_example_keys(index_keys(rng, index))
  x = preprocess(images, data_keys, binarize, threshold)
  return model.apply(model_vars, x, y, method=model.encode)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _decode(model, model_vars, z, y, likelihood_name):
  return decoder_mean(model.apply(model_vars, z, y, method=model.decode), likelihood_name)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _reconstruct(model, model_vars, x, y, likelihood_name):
  z = model.apply(model_vars, x, y, method=model.encode).mean
  return decoder_mean(model.apply(model_vars, z, y, method=model.decode), likelihood_name)


@functools.partial(jax.jit, static_argnums=(0, 3, 6))
def _generate(model, model_vars, rng, num, y, temperature, likelihood_name):
  out = model.apply(model_vars, rng, num, y, temperature, method=model.generate)
  return decoder_mean(out, likelihood_name)


@functools.lru_cache(maxsize=32)
def _terms_fn(model: Model, config_json: str) -> Callable:
  config = likelihood.elbo_config(ml_collections.ConfigDict(json.loads(config_json)))

  @jax.jit
  def terms(model_vars, batch, rng):
    keys = index_keys(rng, batch["index"])
    out, _ = steps.forward_terms(
      model, model_vars["params"], batch, keys, config, model_state_of(model_vars)
    )
    return out

  return terms


@dataclasses.dataclass
class Inference:
  """A trained model's calls, batched over the mesh.

  Attributes:
    model: the model.
    model_vars: its variables.
    config: the run config (likelihood, binarization).
    mesh: devices the batches are split over (a 'data' axis); default all local devices.
    batch_size: largest batch per call.
  """

  model: Model
  model_vars: dict
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh | None = None
  batch_size: int = BATCH_SIZE

  def __post_init__(self):
    self.mesh = self.mesh or meshes.make_mesh()
    self.model_vars = meshes.put(self.model_vars, meshes.replicated(self.mesh))

  def labels(self, labels) -> np.ndarray | None:
    """The labels to pass the model: the labels for a conditional model, None otherwise."""
    if labels is None or not self.model.capabilities.conditional:
      return None
    return np.asarray(labels, np.int32)

  def _bucket(self, n: int) -> int:
    size = min(self.batch_size, max(16, 2 ** math.ceil(math.log2(max(n, 1)))))
    return -(-size // self.mesh.size) * self.mesh.size

  def batched(self, fn: Callable, *arrays):
    """`fn` over equal-length arrays (None passes through) in padded, sharded batches.

    Returns the outputs (a pytree of arrays) concatenated back to the arrays' length, as numpy.
    """
    n = len(arrays[0])
    size = self._bucket(n)
    sharding = meshes.batch_sharded(self.mesh)
    parts = []
    for start in range(0, n, size):
      idx = np.minimum(np.arange(start, start + size), n - 1)
      chunk = [None if a is None else meshes.put(np.asarray(a)[idx], sharding) for a in arrays]
      keep = min(size, n - start)
      parts.append(jax.tree.map(lambda v, keep=keep: v[:keep], meshes.fetch(fn(*chunk))))
    return jax.tree.map(lambda *vs: np.concatenate(vs), *parts)

  def encode(self, images, labels=None) -> Posterior:
    """The posterior (numpy) of uint8 images [n, H, W, C]."""
    settings = deterministic_binarization(self.config.data)
    return self.batched(
      lambda img, y: _encode(self.model, self.model_vars, img, y, *settings),
      images,
      self.labels(labels),
    )

  def encode_evaluated(self, images, labels, rng: jax.Array) -> Posterior:
    """The posterior of the inputs evaluation scores: example i binarized with fold_in(rng, i).

    With dynamic binarization these are the binary images the likelihoods see (`rng` is the
    evaluation key), not the intensities `encode` uses.
    """
    d = self.config.data
    settings = (d.binarize, float(d.binarize_threshold))
    return self.batched(
      lambda img, y, idx: _encode_evaluated(
        self.model, self.model_vars, img, y, idx, rng, *settings
      ),
      images,
      self.labels(labels),
      np.arange(len(images)),
    )

  def posterior_means(self, images, labels=None) -> np.ndarray:
    """The deterministic codes [n, d] of uint8 images."""
    return self.encode(images, labels).mean

  def decode(self, z, labels=None) -> np.ndarray:
    """The images (means of p(x|z), in [0, 1]) that latents [n, d] decode to."""
    name = self.config.model.likelihood
    z = np.asarray(z, np.float32)
    return self.batched(
      lambda zz, y: _decode(self.model, self.model_vars, zz, y, name), z, self.labels(labels)
    )

  def inputs(self, images) -> np.ndarray:
    """uint8 images as the encoder sees them (deterministic binarization), [0, 1] floats."""
    return np.asarray(
      preprocess(jnp.asarray(images), None, *deterministic_binarization(self.config.data))
    )

  def reconstruct(self, x, labels=None) -> np.ndarray:
    """Decoded posterior means of float inputs x in [0, 1]."""
    name = self.config.model.likelihood
    x = np.asarray(x, np.float32)
    return self.batched(
      lambda xx, y: _reconstruct(self.model, self.model_vars, xx, y, name), x, self.labels(labels)
    )

  def prior_samples(self, rng: jax.Array, num: int, labels=None, temperature: float = 1.0):
    """Decoded means of `num` draws from the model's prior (its own sampler, `generate`)."""
    y = self.labels(labels)
    y = None if y is None else jnp.asarray(y)
    out = _generate(
      self.model, self.model_vars, rng, num, y, temperature, self.config.model.likelihood
    )
    return np.asarray(out)

  def elbo_terms(self, images, labels, rng: jax.Array) -> dict[str, np.ndarray]:
    """Per-example single-sample ELBO terms; example i uses keys fold_in(rng, i)."""
    fn = _terms_fn(self.model, self.config.to_json_best_effort())
    y = self.labels(labels)

    def run(img, lab, idx):
      batch = {"image": img, "index": idx, **({} if lab is None else {"label": lab})}
      return fn(self.model_vars, batch, rng)

    return self.batched(run, images, y, np.arange(len(images)))

  def log_likelihoods(
    self, images, labels, rng: jax.Array, num_samples: int, chunk: int = 100
  ) -> np.ndarray:
    """Per-example importance-weighted log p(x) estimates [n] (see `likelihood`)."""
    size = self._bucket(len(images))
    return likelihood.log_likelihoods(
      self.model,
      self.model_vars,
      images,
      self.labels(labels),
      self.config,
      self.mesh,
      rng,
      num_samples=num_samples,
      chunk=min(chunk, num_samples),
      batch_size=size,
    )
