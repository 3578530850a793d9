"""Bidirectional Monte Carlo bounds on log p(x) of data simulated from the model.

BDMC (Grosse et al. 2015, 2016; Wu et al. 2017): on data simulated from the model, z ~ p(z) and
x ~ p(x|z), the kept z is an exact sample of p(z|x). AIS run backwards from it (beta from 1 to 0)
has E[w] = 1/p(x), so minus the logmeanexp of its weights is a stochastic upper bound on log p(x).
The forward and reverse bounds sandwich the true log p(x) of the simulated data; their gap bounds
the error of forward AIS with the same schedule on data like these. Every reverse chain of an
example starts from the same exact sample (each is marginally exact, so their mean weight is still
unbiased for 1/p(x)).

Simulated example i draws z and then x ~ p(x|z) from fold_in(sample_key, i), sample_key =
`keys.run_keys(seed)['sample']`; its chains use the keys of evaluation example i (see `ais`), and
its reverse chains replay the forward run's step sizes backwards.
"""

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vae_jax.evaluation import ais, annealing
from vae_jax.evaluation.likelihood import evaluation_key
from vae_jax.losses import likelihoods
from vae_jax.losses.distributions import logmeanexp
from vae_jax.models import Model
from vae_jax.training.keys import run_keys, split_example_keys


def _reverse(densities, z_exact, eps_keys, settings, schedule, step_sizes):
  """Reverse AIS from exact posterior samples: (upper bound [batch], mean acceptance [batch]).

  Transition s of the reverse chain targets beta_{T-s}, with the step size forward transition T-s
  had.
  """
  keys = ais.chain_keys(eps_keys, ais.REVERSE, settings.num_chains)
  z0 = jnp.broadcast_to(z_exact[:, None], (z_exact.shape[0], settings.num_chains, z_exact.shape[1]))
  chains = annealing.anneal(
    densities, z0, schedule[::-1], keys, settings.leapfrog_steps, step_sizes[::-1]
  )
  return -logmeanexp(chains.log_weight, axis=1), chains.acceptance.mean(axis=1)


def make_bdmc(model: Model, config: ml_collections.ConfigDict, mesh: Mesh, settings: ais.Settings):
  """`(model_vars, batch, rng, simulation_rng) -> (x, z, lower, upper, acc_f, acc_r)`, jitted.

  Simulates (z, x) per example, then runs forward AIS on x and reverse AIS from z.
  """
  schedule = annealing.betas(settings.num_steps, settings.schedule)
  m = config.model

  def per_device(model_vars, batch, keys, simulation_keys):
    y = batch.get("label")
    z_keys, x_keys = jnp.moveaxis(jax.vmap(jax.random.split)(simulation_keys), 1, 0)
    z = model.apply(model_vars, z_keys, y, method=model.prior_sample)
    o = model.apply(model_vars, z, y, method=model.decode_latent)
    x = likelihoods.sample(x_keys, o.out, m.likelihood, m.gaussian_sigma, o.log_sigma)
    _, eps_keys = split_example_keys(keys)
    sample = ais.prior_sampler(model, model_vars, y)
    densities = ais.model_densities(model, model_vars, x, y, config)
    lower, acc_f, step_sizes = ais.forward(sample, densities, eps_keys, settings, schedule)
    upper, acc_r = _reverse(densities, z, eps_keys, settings, schedule, step_sizes)
    return x, z, lower, upper, acc_f, acc_r

  return ais.sharded_jit(per_device, mesh, 2)


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
  settings: ais.Settings,
) -> dict[str, np.ndarray]:
  """Simulates `num_examples` (z, x) from the model and sandwiches each log p(x).

  Args:
    model: a model with `capabilities.joint_density`.
    model_vars: its variables, replicated over `mesh`.
    num_examples: how many (z, x) to simulate.
    labels: int [num_examples] to condition the simulation on (conditional models), else None.
    config: the run config.
    mesh: mesh with a `DATA_AXIS` axis.
    rng: evaluation key of the chains.
    simulation_rng: key of the simulated data (example i: fold_in(simulation_rng, i)).
    settings: chains, schedule, leapfrog steps, batch size.

  Returns:
    `x` [n, ...] and `z` [n, d] simulated, `lower` and `upper` [n] (float64 nats: forward and
    reverse AIS), `acceptance_forward` and `acceptance_reverse` [n].
  """
  run = make_bdmc(model, config, mesh, settings)
  batches = _index_batches(num_examples, labels, settings.batch_for(num_examples, mesh.size))
  x, z, lower, upper, acc_f, acc_r = ais.run_batches(
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


def bdmc(
  model: Model,
  model_vars: dict,
  num_examples: int,
  labels: np.ndarray | None,
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  settings: ais.Settings,
) -> dict:
  """BDMC bounds on simulated data (the `bdmc` group), from `config.seed`'s keys.

  Returns:
    `bdmc_lower` and `bdmc_upper` (mean forward and reverse AIS log p(x) of the simulated data,
    nats), `bdmc_gap` (mean upper - lower) and its `bdmc_gap_stderr`, `bdmc_gap_max`, the mean
    acceptance of both directions, the per-example bounds (`bdmc_lower_per_example`,
    `bdmc_upper_per_example`), the settings, `num_examples` and `seconds`.
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
    "bdmc_gap_stderr": ais.stderr(gap),
    "bdmc_gap_max": float(gap.max()),
    "bdmc_acceptance_forward": float(out["acceptance_forward"].mean()),
    "bdmc_acceptance_reverse": float(out["acceptance_reverse"].mean()),
    "bdmc_lower_per_example": out["lower"].tolist(),
    "bdmc_upper_per_example": out["upper"].tolist(),
    **settings.record(),
    "num_examples": num_examples,
    "seconds": time.perf_counter() - start,
  }
