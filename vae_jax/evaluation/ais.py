"""Annealed importance sampling of log p(x) (Neal 2001), and bidirectional Monte Carlo bounds.

AIS moves chains from the prior p(z) to the posterior p(z|x) along the geometric path
f_t(z) = p(z) p(x|z)^beta_t, 0 = beta_0 < ... < beta_T = 1 (T intermediate distributions; linear
betas, or the sigmoidal schedule of Grosse et al. 2015 that Wu et al. 2017 use). A chain starts at
z_0 ~ p(z), adds (beta_t - beta_{t-1}) log p(x|z_{t-1}) to its log weight and moves by an HMC
transition that leaves f_t invariant (`hmc`). E[w] = p(x), so the logmeanexp of the weights of C
chains is a stochastic lower bound on log p(x) that tightens as T and C grow.

HMC step sizes: PILOT_CHAINS more chains per example anneal alongside the C kept ones, each
adapting its step size towards an acceptance rate of 0.65 after every transition; at transition t
every kept chain uses the geometric mean of its example's pilot step sizes there, and the pilots'
weights are dropped. Wu et al. adapt one step size for the whole batch from the chains whose
weights they keep; here the kept chains' kernels do not depend on their own past, as AIS's proof
requires (self-adapting chains measured 0.11 nats too high on the test's linear-Gaussian model, see
`hmc`), and nothing depends on the other examples of a batch. The pilots cost PILOT_CHAINS / C
more. Reverse AIS (below) replays the forward run's step sizes backwards.

BDMC (Grosse et al. 2015, 2016; Wu et al. 2017): on data simulated from the model, z ~ p(z) and
x ~ p(x|z), the kept z is an exact sample of p(z|x). AIS run backwards from it (beta from 1 to 0)
has E[w] = 1/p(x), so minus the logmeanexp of its weights is a stochastic upper bound on log p(x).
The forward and reverse bounds sandwich the true log p(x) of the simulated data; their gap bounds
the error of forward AIS with the same schedule on data like these. Every reverse chain of an
example starts from the same exact sample (each is marginally exact, so their mean weight is still
unbiased for 1/p(x)).

Keys: example i uses its evaluation key, split as the IW likelihood splits it (so a dynamically
binarized image is the one training's evaluation and `iw_nll` score). Chain c of kind d
(0 forward, 1 reverse, 2 pilot) uses fold_in(fold_in(eps_key_i, d), c), its start
fold_in(chain, 0) and its t-th transition fold_in(chain, t). Simulated example i draws z and then
x from fold_in(sample_key, i), sample_key = `keys.run_keys(seed)['sample']`. Every chain is
computed from its own keys and its own example only, so estimates do not depend on the batch size
or the number of devices.
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
from vae_jax.evaluation import hmc
from vae_jax.evaluation.likelihood import bits_per_dim, evaluation_key
from vae_jax.losses import likelihoods
from vae_jax.losses.distributions import logmeanexp
from vae_jax.models import Model
from vae_jax.training import compile_options, steps
from vae_jax.training import mesh as meshes
from vae_jax.training.keys import index_keys, run_keys, split_example_keys
from vae_jax.training.mesh import DATA_AXIS

SCHEDULES = ("sigmoid", "linear")
SIGMOID_RADIUS = 4.0  # betas ~ sigmoid(linspace(-4, 4)), rescaled to [0, 1] (Grosse et al.).
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
    batch_size: examples per call (a multiple of the devices).
  """

  num_chains: int = 16
  num_steps: int = 1000
  leapfrog_steps: int = 10
  schedule: str = "sigmoid"
  batch_size: int = 100

  def validate(self, num_devices: int, prefix: str = "ais_") -> None:
    """Raises ConfigError naming the flag (`<prefix>chains`, ...) of a value that cannot work."""
    for flag, value in (
      ("chains", self.num_chains),
      ("steps", self.num_steps),
      ("leapfrog", self.leapfrog_steps),
    ):
      if value < 1:
        raise ConfigError(f"{prefix}{flag}={value} must be >= 1.")
    if self.schedule not in SCHEDULES:
      raise ConfigError(f"{prefix}schedule={self.schedule!r} is not one of {SCHEDULES}.")
    if self.batch_size < 1 or self.batch_size % num_devices:
      raise ConfigError(
        f"{prefix}batch_size={self.batch_size} must be a positive multiple of the "
        f"{num_devices} devices."
      )

  def record(self) -> dict:
    """The settings as result fields."""
    return {
      "ais_chains": self.num_chains,
      "ais_steps": self.num_steps,
      "ais_leapfrog": self.leapfrog_steps,
      "ais_schedule": self.schedule,
      "ais_batch_size": self.batch_size,
    }


def betas(num_steps: int, schedule: str = "sigmoid") -> np.ndarray:
  """The annealing schedule beta_0 = 0 < ... < beta_T = 1, [num_steps + 1] float64."""
  if schedule == "linear":
    return np.linspace(0.0, 1.0, num_steps + 1)
  if schedule == "sigmoid":
    s = 1.0 / (1.0 + np.exp(-np.linspace(-SIGMOID_RADIUS, SIGMOID_RADIUS, num_steps + 1)))
    return (s - s[0]) / (s[-1] - s[0])
  raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")


def _over_chains(fn):
  """Applies a per-batch function to each chain of [batch, chains, ...] arrays."""
  return jax.vmap(fn, in_axes=1, out_axes=1)


def model_densities(model: Model, model_vars: dict, x: jax.Array, y, config) -> hmc.Densities:
  """log p(z) and log p(x|z) of latents [batch, chains, d] for examples x [batch, ...]."""
  m = config.model

  def log_prior(z):
    return _over_chains(lambda zc: model.apply(model_vars, zc, y, method=model.log_prior))(z)

  def log_likelihood(z):
    def one(zc):
      o = model.apply(model_vars, zc, y, method=model.decode_latent)
      return likelihoods.log_likelihood(x, o.out, m.likelihood, m.gaussian_sigma, o.log_sigma)

    return _over_chains(one)(z)

  return hmc.Densities(log_prior, log_likelihood)


def chain_keys(eps_keys: jax.Array, direction: int, num_chains: int) -> jax.Array:
  """Keys [batch, chains]: fold_in(fold_in(eps_key, direction), chain)."""
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eps_keys, direction)
  fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  return jax.vmap(lambda k: fold(k, jnp.arange(num_chains)))(keys)


def _prior_sampler(model: Model, model_vars: dict, y):
  """keys [batch, chains] -> z ~ p(z) [batch, chains, d]."""
  return _over_chains(lambda k: model.apply(model_vars, k, y, method=model.prior_sample))


def _forward(sample, densities, eps_keys, settings, schedule):
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
  z0 = sample(hmc.fold_keys(keys, 0))
  chains = hmc.anneal(densities, z0, schedule, keys, settings.leapfrog_steps, pilots=PILOT_CHAINS)
  log_w, acceptance = chains.log_weight[:, PILOT_CHAINS:], chains.acceptance[:, PILOT_CHAINS:]
  return logmeanexp(log_w, axis=1), acceptance.mean(axis=1), chains.step_sizes[:, :, -1]


def _reverse(densities, z_exact, eps_keys, settings, schedule, step_sizes):
  """Reverse AIS from exact posterior samples: (upper bound [batch], mean acceptance [batch]).

  Transition s of the reverse chain targets beta_{T-s}, with the step size forward transition T-s
  had.
  """
  keys = chain_keys(eps_keys, REVERSE, settings.num_chains)
  z0 = jnp.broadcast_to(z_exact[:, None], (z_exact.shape[0], settings.num_chains, z_exact.shape[1]))
  chains = hmc.anneal(
    densities, z0, schedule[::-1], keys, settings.leapfrog_steps, step_sizes[::-1]
  )
  return -logmeanexp(chains.log_weight, axis=1), chains.acceptance.mean(axis=1)


def _jit(per_device, mesh: Mesh, num_roots: int):
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


def make_forward(model: Model, config: ml_collections.ConfigDict, mesh: Mesh, settings: Settings):
  """`(model_vars, batch, rng) -> (log p̂(x), acceptance)`, jitted and data-parallel."""
  schedule = betas(settings.num_steps, settings.schedule)

  def per_device(model_vars, batch, keys):
    x, y, eps_keys = steps.model_inputs(batch, keys, config.data)
    sample = _prior_sampler(model, model_vars, y)
    densities = model_densities(model, model_vars, x, y, config)
    log_p, acceptance, _ = _forward(sample, densities, eps_keys, settings, schedule)
    return log_p, acceptance

  return _jit(per_device, mesh, 1)


def make_bdmc(model: Model, config: ml_collections.ConfigDict, mesh: Mesh, settings: Settings):
  """`(model_vars, batch, rng, simulation_rng) -> (x, z, lower, upper, acc_f, acc_r)`, jitted.

  Simulates (z, x) per example, then runs forward AIS on x and reverse AIS from z.
  """
  schedule = betas(settings.num_steps, settings.schedule)
  m = config.model

  def per_device(model_vars, batch, keys, simulation_keys):
    y = batch.get("label")
    z_keys, x_keys = jnp.moveaxis(jax.vmap(jax.random.split)(simulation_keys), 1, 0)
    z = model.apply(model_vars, z_keys, y, method=model.prior_sample)
    o = model.apply(model_vars, z, y, method=model.decode_latent)
    x = likelihoods.sample(x_keys, o.out, m.likelihood, m.gaussian_sigma, o.log_sigma)
    _, eps_keys = split_example_keys(keys)
    sample = _prior_sampler(model, model_vars, y)
    densities = model_densities(model, model_vars, x, y, config)
    lower, acc_f, step_sizes = _forward(sample, densities, eps_keys, settings, schedule)
    upper, acc_r = _reverse(densities, z, eps_keys, settings, schedule, step_sizes)
    return x, z, lower, upper, acc_f, acc_r

  return _jit(per_device, mesh, 2)


def _run_batches(fn, batches, mesh: Mesh, *roots) -> list[np.ndarray]:
  """`fn(batch, *roots)` over padded batches; the outputs' real rows, concatenated as numpy."""
  sharding = meshes.batch_sharded(mesh)
  parts = []
  for batch in batches:
    batch = jax.device_put(batch, sharding)
    out = fn(batch, *roots)
    real = np.asarray(batch["mask"]) > 0
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
    mesh: mesh with a `DATA_AXIS` axis; `settings.batch_size` must be a multiple of its size.
    rng: evaluation key (`likelihood.evaluation_key(config.seed)`).
    settings: chains, schedule, leapfrog steps, batch size.

  Returns:
    `log_p` [n] (float64 nats) and `acceptance` [n] (mean HMC acceptance probability).
  """
  forward = make_forward(model, config, mesh, settings)
  batches = eval_batches(images, labels, settings.batch_size)
  log_p, acceptance = _run_batches(functools.partial(forward, model_vars), batches, mesh, rng)
  return {"log_p": log_p.astype(np.float64), "acceptance": acceptance}


def _index_batches(num: int, labels: np.ndarray | None, batch_size: int):
  """Batches of example indices 0..num-1 (with their labels), padded and masked."""
  for start in range(0, num, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = (idx < num).astype(np.float32)
    idx = np.minimum(idx, num - 1)
    yield {"index": idx, "mask": mask, **({} if labels is None else {"label": labels[idx]})}


def bdmc_bounds(
  model: Model,
  model_vars: dict,
  num_examples: int,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  rng: jax.Array,
  simulation_rng: jax.Array,
  settings: Settings,
) -> dict[str, np.ndarray]:
  """Simulates `num_examples` (z, x) from the model and sandwiches each log p(x).

  Args:
    model: a model with `capabilities.joint_density`.
    model_vars: its variables, replicated over `mesh`.
    num_examples: how many (z, x) to simulate.
    labels: int [num_examples] to condition the simulation on (conditional models), else None.
    config: the run config.
    mesh: mesh with a `DATA_AXIS` axis; `settings.batch_size` must be a multiple of its size.
    rng: evaluation key of the chains.
    simulation_rng: key of the simulated data (example i: fold_in(simulation_rng, i)).
    settings: chains, schedule, leapfrog steps, batch size.

  Returns:
    `x` [n, ...] and `z` [n, d] simulated, `lower` and `upper` [n] (float64 nats: forward and
    reverse AIS), `acceptance_forward` and `acceptance_reverse` [n].
  """
  run = make_bdmc(model, config, mesh, settings)
  batches = _index_batches(num_examples, labels, settings.batch_size)
  x, z, lower, upper, acc_f, acc_r = _run_batches(
    functools.partial(run, model_vars), batches, mesh, rng, simulation_rng
  )
  return {
    "x": x,
    "z": z,
    "lower": lower.astype(np.float64),
    "upper": upper.astype(np.float64),
    "acceptance_forward": acc_f,
    "acceptance_reverse": acc_r,
  }


def _stderr(v: np.ndarray) -> float:
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
    `ais_acceptance`, the settings, `num_examples` and `seconds` (wall time, compilation included).
  """
  start = time.perf_counter()
  out = log_likelihoods(
    model, model_vars, images, labels, config, mesh, evaluation_key(config.seed), settings
  )
  nll = float(-out["log_p"].mean())
  return {
    "ais_nll": nll,
    "ais_nll_stderr": _stderr(out["log_p"]),
    "ais_nll_bits_per_dim": bits_per_dim(nll, images.shape[1:]),
    "ais_acceptance": float(out["acceptance"].mean()),
    **settings.record(),
    "num_examples": len(images),
    "seconds": time.perf_counter() - start,
  }


def bdmc(
  model: Model,
  model_vars: dict,
  num_examples: int,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  settings: Settings,
) -> dict:
  """BDMC bounds on simulated data (the `bdmc` group), from `config.seed`'s keys.

  Returns:
    `bdmc_lower` and `bdmc_upper` (mean forward and reverse AIS log p(x) of the simulated data,
    nats), `bdmc_gap` (mean upper - lower) and its `bdmc_gap_stderr`, `bdmc_gap_max`, the mean
    acceptance of both directions, the settings, `num_examples` and `seconds`.
  """
  start = time.perf_counter()
  out = bdmc_bounds(
    model,
    model_vars,
    num_examples,
    labels,
    config,
    mesh,
    evaluation_key(config.seed),
    run_keys(config.seed)["sample"],
    settings,
  )
  gap = out["upper"] - out["lower"]
  return {
    "bdmc_lower": float(out["lower"].mean()),
    "bdmc_upper": float(out["upper"].mean()),
    "bdmc_gap": float(gap.mean()),
    "bdmc_gap_stderr": _stderr(gap),
    "bdmc_gap_max": float(gap.max()),
    "bdmc_acceptance_forward": float(out["acceptance_forward"].mean()),
    "bdmc_acceptance_reverse": float(out["acceptance_reverse"].mean()),
    **settings.record(),
    "num_examples": num_examples,
    "seconds": time.perf_counter() - start,
  }
