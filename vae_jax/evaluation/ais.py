"""Annealed importance sampling (AIS, Neal 2001) of the test log-likelihood log p(x).

AIS moves chains from the prior p(z) to the posterior p(z|x) along the geometric path
f_t(z) = p(z) p(x|z)^beta_t, 0 = beta_0 < ... < beta_T = 1 (T intermediate distributions; linear
betas, or the sigmoidal schedule of Grosse et al. 2015 that Wu et al. 2017 use). A chain starts at
z_0 ~ p(z), adds (beta_t - beta_{t-1}) log p(x|z_{t-1}) to its log weight and moves by an HMC
transition that leaves f_t invariant (`annealing`). E[w] = p(x), so the logmeanexp of the weights
of C chains is a stochastic lower bound on log p(x) that tightens as T and C grow.

HMC step sizes: PILOT_CHAINS more chains per example anneal alongside the C kept ones, each
adapting its step size towards an acceptance rate of 0.65 after every transition; at transition t
every kept chain uses the geometric mean of its example's pilot step sizes there, and the pilots'
weights are dropped. Wu et al. adapt one step size for the whole batch from the chains whose
weights they keep; here the kept chains' kernels do not depend on their own past, as AIS's proof
requires (self-adapting chains measured 0.11 nats too high on the test's linear-Gaussian model, see
`annealing`), and nothing depends on the other examples of a batch. The pilots cost PILOT_CHAINS / C
more.

`bdmc` sandwiches log p(x) of data simulated from the model between this forward AIS and reverse
AIS (Grosse et al. 2015, 2016), which replays the forward run's step sizes backwards.

Keys: example i uses its evaluation key, split as the IW likelihood splits it (so a dynamically
binarized image is the one training's evaluation and `iw_nll` score). Chain c of kind d
(0 forward, 1 reverse, 2 pilot) uses fold_in(fold_in(eps_key_i, d), c), its start
fold_in(chain, 0) and its t-th transition fold_in(chain, t). Every chain is computed from its own
keys and its own example only, so estimates do not depend on the batch size or the number of
devices.
"""

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from vae_jax.data.pipeline import eval_batches
from vae_jax.errors import ConfigError
from vae_jax.evaluation import annealing
from vae_jax.evaluation.annealing import SCHEDULES, betas
from vae_jax.evaluation.likelihood import bits_per_dim, evaluation_key
from vae_jax.losses import likelihoods
from vae_jax.losses.distributions import logmeanexp
from vae_jax.models import Model
from vae_jax.training import compile_options, steps
from vae_jax.training import mesh as meshes
from vae_jax.training.keys import index_keys
from vae_jax.training.mesh import DATA_AXIS

FORWARD, REVERSE, PILOT = 0, 1, 2  # Directions: the keys of each kind of chain.
PILOT_CHAINS = 4


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to anneal.

  Attributes:
    num_chains: AIS chains per example, C.
    num_steps: intermediate distributions T (T - 1 HMC transitions; T = 1 is importance sampling
      from the prior).
    leapfrog_steps: leapfrog steps L per HMC transition.
    schedule: 'sigmoid' or 'linear' betas.
    batch_size: examples per call, rounded up to a multiple of the devices; fewer examples make
      smaller batches, padded to a multiple of the devices only.
  """

  num_chains: int = 16
  num_steps: int = 1000
  leapfrog_steps: int = 10
  schedule: str = "sigmoid"
  batch_size: int = 100

  def validate(self, num_devices: int) -> None:
    """Raises ConfigError naming the flag (`ais_chains`, ...) of a value that cannot work."""
    for flag, value in (
      ("chains", self.num_chains),
      ("steps", self.num_steps),
      ("leapfrog", self.leapfrog_steps),
    ):
      if value < 1:
        raise ConfigError(f"ais_{flag}={value} must be >= 1.")
    if self.schedule not in SCHEDULES:
      raise ConfigError(f"ais_schedule={self.schedule!r} is not one of {SCHEDULES}.")
    del num_devices  # Batches are rounded up to a multiple of the devices (`batch_for`).
    if self.batch_size < 1:
      raise ConfigError(f"ais_batch_size={self.batch_size} must be >= 1.")

  def batch_for(self, num_examples: int, num_devices: int) -> int:
    """Examples per call: `batch_size` (at most what `num_examples` need), a multiple of devices.

    Estimates do not depend on the batch size, so it is rounded up like the other evaluation
    batches (`mesh.split_batch_size`); padding is masked.
    """
    size = min(self.batch_size, -(-num_examples // num_devices) * num_devices)
    return meshes.split_batch_size(size, num_devices, "ais_batch_size")

  def record(self) -> dict:
    """The settings as result fields."""
    return {
      "ais_chains": self.num_chains,
      "ais_steps": self.num_steps,
      "ais_leapfrog": self.leapfrog_steps,
      "ais_schedule": self.schedule,
      "ais_batch_size": self.batch_size,
    }


def _over_chains(fn):
  """Applies a per-batch function to each chain of [batch, chains, ...] arrays."""
  return jax.vmap(fn, in_axes=1, out_axes=1)


def model_densities(model: Model, model_vars: dict, x: jax.Array, y, config) -> annealing.Densities:
  """log p(z) and log p(x|z) of latents [batch, chains, d] for examples x [batch, ...]."""
  m = config.model

  def log_prior(z):
    return _over_chains(lambda zc: model.apply(model_vars, zc, y, method=model.log_prior))(z)

  def log_likelihood(z):
    def one(zc):
      o = model.apply(model_vars, zc, y, method=model.decode_latent)
      return likelihoods.log_likelihood(x, o.out, m.likelihood, m.gaussian_sigma, o.log_sigma)

    return _over_chains(one)(z)

  return annealing.Densities(log_prior, log_likelihood)


def chain_keys(eps_keys: jax.Array, direction: int, num_chains: int) -> jax.Array:
  """Keys [batch, chains]: fold_in(fold_in(eps_key, direction), chain)."""
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eps_keys, direction)
  fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  return jax.vmap(lambda k: fold(k, jnp.arange(num_chains)))(keys)


def prior_sampler(model: Model, model_vars: dict, y):
  """keys [batch, chains] -> z ~ p(z) [batch, chains, d]."""
  return _over_chains(lambda k: model.apply(model_vars, k, y, method=model.prior_sample))


def forward(sample, densities, eps_keys, settings, schedule):
  """Forward AIS of each example, led by PILOT_CHAINS pilots (dropped from the estimate).

  Returns:
    log p̂(x) [batch], the mean acceptance [batch] and the step sizes [T - 1, batch].
  """
  keys = jnp.concatenate(
    [
      chain_keys(eps_keys, PILOT, PILOT_CHAINS),
      chain_keys(eps_keys, FORWARD, settings.num_chains),
    ],
    axis=1,
  )
  z0 = sample(annealing.fold_keys(keys, 0))
  chains = annealing.anneal(
    densities, z0, schedule, keys, settings.leapfrog_steps, pilots=PILOT_CHAINS
  )
  log_w, acceptance = chains.log_weight[:, PILOT_CHAINS:], chains.acceptance[:, PILOT_CHAINS:]
  return logmeanexp(log_w, axis=1), acceptance.mean(axis=1), chains.step_sizes[:, :, -1]


def sharded_jit(per_device, mesh: Mesh, num_roots: int):
  """`(model_vars, batch, *roots) -> outputs`, jitted: `per_device` over the data axis.

  `per_device(model_vars, batch, *example_keys)` gets, for each root key, the keys
  fold_in(root, batch['index']) of its examples.
  """
  sharded = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(P(), *([P(DATA_AXIS)] * (num_roots + 1))),
    out_specs=P(DATA_AXIS),
  )

  @functools.partial(jax.jit, compiler_options=compile_options.step_options())
  def run(model_vars, batch, *roots):
    return sharded(model_vars, batch, *(index_keys(r, batch["index"]) for r in roots))

  return run


def makeforward(model: Model, config: ml_collections.ConfigDict, mesh: Mesh, settings: Settings):
  """`(model_vars, batch, rng) -> (log p̂(x), acceptance)`, jitted and data-parallel."""
  schedule = betas(settings.num_steps, settings.schedule)

  def per_device(model_vars, batch, keys):
    x, y, eps_keys = steps.model_inputs(batch, keys, config.data)
    sample = prior_sampler(model, model_vars, y)
    densities = model_densities(model, model_vars, x, y, config)
    log_p, acceptance, _ = forward(sample, densities, eps_keys, settings, schedule)
    return log_p, acceptance

  return sharded_jit(per_device, mesh, 1)


def run_batches(fn, batches, mesh: Mesh, *roots) -> list[np.ndarray]:
  """`fn(batch, *roots)` over padded batches; the outputs' real rows, concatenated as numpy.

  Batches go through `mesh.put` and outputs through `mesh.fetch`, so every process of a
  multi-process run gets every example's values.
  """
  sharding = meshes.batch_sharded(mesh)
  parts = []
  for batch in batches:
    real = np.asarray(batch["mask"]) > 0
    out = meshes.fetch(fn(meshes.put(batch, sharding), *roots))
    parts.append([np.asarray(v)[real] for v in out])
  return [np.concatenate(vs) for vs in zip(*parts, strict=True)]


def log_likelihoods(
  model: Model,
  model_vars: dict,
  images: np.ndarray,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  rng: jax.Array,
  settings: Settings,
) -> dict[str, np.ndarray]:
  """Per-example forward AIS estimates of log p(x) of uint8 test images.

  Args:
    model: a model with `capabilities.joint_density`.
    model_vars: its variables, replicated over `mesh`.
    images: uint8 [n, H, W, C], preprocessed as `config.data` says.
    labels: int [n] for conditional models, else None.
    config: the run config.
    mesh: mesh with a `DATA_AXIS` axis.
    rng: evaluation key (`likelihood.evaluation_key(config.seed)`).
    settings: chains, schedule, leapfrog steps, batch size.

  Returns:
    `log_p` [n] (float64 nats) and `acceptance` [n] (mean HMC acceptance probability).
  """
  forward = makeforward(model, config, mesh, settings)
  batches = eval_batches(images, labels, settings.batch_for(len(images), mesh.size))
  log_p, acceptance = run_batches(functools.partial(forward, model_vars), batches, mesh, rng)
  return {"log_p": log_p.astype(np.float64), "acceptance": acceptance}


def stderr(v: np.ndarray) -> float:
  """The standard error of the mean of per-example values (0 for one example)."""
  return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def estimate(
  model: Model,
  model_vars: dict,
  images: np.ndarray,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  settings: Settings,
) -> dict:
  """The AIS test NLL of `images` (the `ais` group), from `config.seed`'s evaluation key.

  Returns:
    `ais_nll` (-mean log p̂(x), nats per example), `ais_nll_stderr`, `ais_nll_bits_per_dim`,
    `ais_acceptance`, `ais_log_p_per_example` (a list), the settings, `num_examples` and
    `seconds` (wall time, compilation included).
  """
  start = time.perf_counter()
  out = log_likelihoods(
    model, model_vars, images, labels, config, mesh, evaluation_key(config.seed), settings
  )
  nll = float(-out["log_p"].mean())
  return {
    "ais_nll": nll,
    "ais_nll_stderr": stderr(out["log_p"]),
    "ais_nll_bits_per_dim": bits_per_dim(nll, images.shape[1:]),
    "ais_acceptance": float(out["acceptance"].mean()),
    "ais_log_p_per_example": out["log_p"].tolist(),
    **settings.record(),
    "num_examples": len(images),
    "seconds": time.perf_counter() - start,
  }
