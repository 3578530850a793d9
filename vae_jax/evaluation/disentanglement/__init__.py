"""Disentanglement metrics on ground-truth data.

Every metric is `compute_xxx(ground_truth_data, representation_fn, seed, **kwargs) -> dict`, with
disentanglement_lib's defaults for its sample counts and classifiers, and a result that depends only
on its arguments. `evaluate_disentanglement` runs several and merges their results.
"""

import inspect
from collections.abc import Sequence

from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.evaluation.disentanglement.beta_vae import compute_beta_vae
from vae_jax.evaluation.disentanglement.dci import compute_dci
from vae_jax.evaluation.disentanglement.factor_vae import compute_factor_vae
from vae_jax.evaluation.disentanglement.mig import compute_mig
from vae_jax.evaluation.disentanglement.sap import compute_sap
from vae_jax.evaluation.disentanglement.utils import RepresentationFn

__all__ = [
  "DISENTANGLEMENT_METRICS",
  "compute_beta_vae",
  "compute_dci",
  "compute_factor_vae",
  "compute_mig",
  "compute_sap",
  "evaluate_disentanglement",
]

DISENTANGLEMENT_METRICS = {
  "beta_vae": compute_beta_vae,
  "factor_vae": compute_factor_vae,
  "mig": compute_mig,
  "dci": compute_dci,
  "sap": compute_sap,
}


def evaluate_disentanglement(
  ground_truth_data: GroundTruthData,
  representation_fn: RepresentationFn,
  seed: int,
  metrics: Sequence[str] = tuple(DISENTANGLEMENT_METRICS),
  **overrides,
) -> dict[str, float]:
  """Runs the named metrics with the same seed and merges their result dicts.

  Args:
    ground_truth_data: The dataset whose factors are sampled and rendered.
    representation_fn: uint8 images [n, H, W, C] to codes [n, d].
    seed: Passed to every metric.
    metrics: Names from `DISENTANGLEMENT_METRICS`.
    **overrides: Either a metric's name mapped to a dict of keyword arguments for that metric
      (`mig={"num_train": 1000}`), or a keyword argument given to every selected metric that
      accepts it (`num_train=1000`); a per-metric value wins over a shared one.

  Returns:
    The union of the metrics' results.

  Raises:
    ValueError: An unknown metric name, or a shared override no selected metric accepts.
  """
  unknown = set(metrics) - set(DISENTANGLEMENT_METRICS)
  if unknown:
    raise ValueError(f"Unknown metrics {sorted(unknown)}; known: {list(DISENTANGLEMENT_METRICS)}")
  per_metric = {k: overrides.pop(k) for k in list(overrides) if k in DISENTANGLEMENT_METRICS}
  parameters = {
    name: inspect.signature(DISENTANGLEMENT_METRICS[name]).parameters for name in metrics
  }
  unused = [k for k in overrides if not any(k in params for params in parameters.values())]
  if unused:
    raise ValueError(f"No metric among {list(metrics)} accepts {unused}")
  results = {}
  for name in metrics:
    kwargs = {k: v for k, v in overrides.items() if k in parameters[name]}
    kwargs.update(per_metric.get(name, {}))
    results.update(
      DISENTANGLEMENT_METRICS[name](ground_truth_data, representation_fn, seed, **kwargs)
    )
  return results
