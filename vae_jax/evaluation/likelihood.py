"""Importance-weighted estimate of the test log-likelihood log p(x) (Burda et al. 2015).

log p(x) >= log p̂_k(x) = log (1/k) sum_s p(x|z_s) p(z_s) / q(z_s|x), z_s ~ q(z|x): an estimate
that is a lower bound in expectation and tightens to log p(x) as k grows. The k log weights come
from `steps.importance_log_weights` in chunks of samples, combined with a running logsumexp, so
memory is bounded by chunk x batch whatever k is. Sample s of an example uses fold_in(eps_key, s),
so the estimate does not depend on the chunk size, nor (example keys come from the example's index)
on the batch size or the number of devices.

Keys: evaluation uses the key training's evaluation uses (`evaluation_key(config.seed)`), so with
dynamic binarization every test image is binarized once, with its example's data key, to the same
binary image that training's evaluation scored; all k samples and the ELBO see that image.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from vae_jax.data.pipeline import eval_batches
from vae_jax.models import Model
from vae_jax.training import compile_options, steps
from vae_jax.training import mesh as meshes
from vae_jax.training.keys import index_keys, run_keys
from vae_jax.training.mesh import DATA_AXIS


def evaluation_key(seed: int) -> jax.Array:
  """The key of training's evaluation (`keys.run_keys(seed)['eval']`)."""
  return run_keys(seed)["eval"]


def elbo_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose eval step computes the single-sample ELBO, whatever the estimator."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.objective.estimator = "elbo"
  return config


def make_log_weight_chunk(
  model: Model, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[..., jax.Array]:
  """Builds `(model_vars, batch, rng, sample_ids, running) -> running'`, jitted and data-parallel.

  `running` [batch] is the logsumexp of the log weights of the samples seen so far (start at -inf);
  the result adds samples `sample_ids` [chunk]. Example keys are fold_in(rng, batch['index']).
  Compiles once per chunk size.
  """

  def per_device(model_vars, batch, keys, sample_ids, running):
    log_w = steps.importance_log_weights(model, model_vars, batch, keys, config, sample_ids)
    return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0))

  sharded = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(), P(DATA_AXIS)),
    out_specs=P(DATA_AXIS),
  )

  @functools.partial(jax.jit, compiler_options=compile_options.step_options())
  def chunk_step(model_vars, batch, rng, sample_ids, running):
    return sharded(model_vars, batch, index_keys(rng, batch["index"]), sample_ids, running)

  return chunk_step


def log_likelihoods(
  model: Model,
  model_vars: dict,
  images: np.ndarray,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  rng: jax.Array,
  *,
  num_samples: int,
  chunk: int,
  batch_size: int,
) -> np.ndarray:
  """Per-example importance-weighted estimates log p̂_k(x), [n] float64 in nats.

  Args:
    model: a model with `capabilities.density` (it outputs log_q_z and log_p_z).
    model_vars: its variables, replicated over `mesh`.
    images: uint8 [n, H, W, C], preprocessed as `config.data` says.
    labels: int [n] for conditional models, else None.
    config: the run config.
    mesh: mesh with a `DATA_AXIS` axis (`batch_size` is rounded up to a multiple of its size).
    rng: evaluation key (`evaluation_key(config.seed)`).
    num_samples: k, importance samples per example.
    chunk: samples evaluated at once.
    batch_size: examples per batch.
  """
  chunk_step = make_log_weight_chunk(model, config, mesh)
  batch_size = meshes.split_batch_size(batch_size, mesh.size, "iw_batch_size")
  sharding = meshes.batch_sharded(mesh)
  out, window = [], meshes.DispatchWindow()
  for batch in eval_batches(images, labels, batch_size):
    batch = meshes.put(batch, sharding)
    running = meshes.put(np.full((batch_size,), -np.inf, np.float32), sharding)
    for start in range(0, num_samples, chunk):
      sample_ids = jnp.arange(start, min(start + chunk, num_samples))
      running = chunk_step(model_vars, batch, rng, sample_ids, running)
      window.add(running)
    real = meshes.fetch(batch["mask"]) > 0
    out.append(np.asarray(meshes.fetch(running), np.float64)[real])
  return np.concatenate(out) - math.log(num_samples)


def elbo_means(
  model: Model,
  model_vars: dict,
  images: np.ndarray,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  rng: jax.Array,
  batch_size: int,
) -> dict[str, np.ndarray]:
  """Test means of the single-sample ELBO terms (`elbo`, `recon`, `kl`, ...) as training evaluates.

  The KL is the model's analytic KL where it has one. With training's evaluation key and the whole
  test split this reproduces training's `eval_elbo`.
  """
  eval_step = steps.make_eval_step(model, elbo_config(config), mesh)
  batch_size = meshes.split_batch_size(batch_size, mesh.size, "batch_size")
  batches = eval_batches(images, labels, batch_size)
  totals = steps.sum_eval_batches(eval_step, model_vars, batches, mesh, rng)
  count = totals.pop("count")
  return {k: np.asarray(v, np.float64) / count for k, v in totals.items()}


def bits_per_dim(nats: float, image_shape) -> float:
  """Nats per example to bits per pixel channel: nats / (D ln 2), D = prod(image_shape).

  For 8-bit data under a discretized likelihood (`logistic_mixture`: a pmf over the 256 values,
  the [0, 255] -> discrete convention) the NLL already is a code length, so no -log(1/256) or
  log 256 offset is added (that offset turns a density on [0, 1] into bits of 8-bit data). For a
  Bernoulli or Gaussian density the figure is that of the density, not of 8-bit data.
  """
  return float(nats / (math.prod(image_shape) * math.log(2.0)))


def estimate(
  model: Model,
  model_vars: dict,
  images: np.ndarray,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  *,
  num_samples: int = 1000,
  chunk: int = 100,
  batch_size: int = 100,
  elbo: dict | None = None,
) -> dict:
  """The importance-weighted test NLL next to the ELBO's, from `config.seed`'s evaluation key.

  `elbo` may pass the `elbo_means` of the same examples (computed here when None).

  Returns:
    `iw_nll` (-mean log p̂_k(x), nats per example), `iw_nll_stderr` (its standard error over
    examples), `iw_nll_bits_per_dim`, `nll_elbo` (-mean single-sample ELBO with the analytic KL),
    `nll_elbo_bits_per_dim`, `iw_samples`, `iw_chunk`, `num_examples`.
  """
  rng = evaluation_key(config.seed)
  log_p = log_likelihoods(
    model,
    model_vars,
    images,
    labels,
    config,
    mesh,
    rng,
    num_samples=num_samples,
    chunk=chunk,
    batch_size=batch_size,
  )
  if elbo is None:
    elbo = elbo_means(model, model_vars, images, labels, config, mesh, rng, batch_size)
  image_shape = images.shape[1:]
  iw_nll = float(-log_p.mean())
  nll_elbo = float(-elbo["elbo"])
  return {
    "iw_nll": iw_nll,
    "iw_nll_stderr": float(log_p.std(ddof=1) / math.sqrt(len(log_p))) if len(log_p) > 1 else 0.0,
    "iw_nll_bits_per_dim": bits_per_dim(iw_nll, image_shape),
    "nll_elbo": nll_elbo,
    "nll_elbo_bits_per_dim": bits_per_dim(nll_elbo, image_shape),
    "iw_samples": num_samples,
    "iw_chunk": chunk,
    "num_examples": len(log_p),
  }
