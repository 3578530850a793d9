"""Evaluation of a reopened run: likelihoods, latent diagnostics and disentanglement metrics.

`evaluate_run(run, metrics)` computes the named metric groups on the run's test split and writes,
per group, `<workdir>/eval/<group>.json` (the latest evaluation), the group's entry in
`<workdir>/eval/results.json` (merged with the other groups already there), a line in the run's
`eval_history.jsonl` (every evaluation, beside training's) and TensorBoard scalars
`<group>/<value>` in `<workdir>/eval` at the checkpoint's step. `python -m vae_jax.evaluate` is its
command line.

Groups: `elbo` (single-sample ELBO as training evaluates it), `iw_nll` (importance-weighted NLL,
see `likelihood`), `ais` (annealed importance sampling NLL) and `bdmc` (its forward and reverse
bounds on data simulated from the model, see `ais` and `bdmc`), `diagnostics` (active units, KL per
dimension, posterior variance) and the disentanglement metrics of
`disentanglement.DISENTANGLEMENT_METRICS` (`disentanglement` names them all), which need a
ground-truth dataset, and `fid` and `precision_recall` (see `sample_quality`). `ais` and `bdmc`
take minutes to hours and those two need a feature network: only a request computes them.
"""

import dataclasses
import inspect
import json
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np

from vae_jax import runs
from vae_jax.data import Dataset, GroundTruthDataset
from vae_jax.errors import ConfigError
from vae_jax.evaluation import (
  ais,
  bdmc,
  diagnostics,
  disentanglement,
  likelihood,
  sample_quality,
)
from vae_jax.evaluation.inference import Inference
from vae_jax.models import family
from vae_jax.training import mesh as meshes

EVAL_DIR = "eval"
DISENTANGLEMENT = tuple(disentanglement.DISENTANGLEMENT_METRICS)
SAMPLE_QUALITY = sample_quality.GROUPS
GROUPS = ("elbo", "iw_nll", "ais", "bdmc", "diagnostics", *DISENTANGLEMENT, *SAMPLE_QUALITY)
ON_REQUEST = ("ais", "bdmc", *SAMPLE_QUALITY)  # Left out when no metrics are named.
ALIASES = {"disentanglement": DISENTANGLEMENT}
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015.
# Arguments of the disentanglement metrics that count samples (scaled by `disentanglement_scale`).
SAMPLE_COUNTS = ("num_train", "num_eval", "num_test", "num_variance_estimate")
# Metrics whose `batch_size` only sets how many images are encoded per call.
ENCODE_BATCH_ONLY = ("mig", "dci", "sap")
REPRESENTATION_BATCH = 256
_SETTINGS = frozenset(
  {"step", "num_examples", "iw_samples", "iw_chunk", "latent_dim", "seed", "scale", "seconds"}
  | {"num_samples", "k", "feature_dim", "feature_net_test_accuracy"}
  | set(ais.Settings().record())
)


@dataclasses.dataclass
class EvalOptions:
  """How to evaluate.

  Attributes:
    iw_samples: importance samples k per example for `iw_nll`.
    iw_chunk: samples evaluated at once (memory ~ iw_chunk x iw_batch_size forward passes).
    iw_batch_size: examples per batch for `iw_nll`.
    batch_size: examples per batch for `elbo` and `diagnostics`; None: data.eval_batch_size.
    num_examples: evaluate on the first N test examples; None: the whole test split. The
      disentanglement metrics draw their own samples and ignore it.
    disentanglement_seed: seed of the disentanglement metrics; fixed (not the run's seed) so that
      runs are scored on the same samples.
    disentanglement_scale: multiplies the metrics' sample counts (disentanglement_lib's defaults
      at 1.0); below 1 for quick checks.
    ais_settings: chains, schedule, leapfrog steps and batch size of `ais` and `bdmc`.
    bdmc_examples: examples `bdmc` simulates from the model (a conditional model's take the test
      labels in order, repeated when there are fewer).
    features_workdir: the feature network of `fid` and `precision_recall` (trained on the run's
      dataset by `python -m vae_jax.evaluation.features train`).
    sample_quality_n: model samples and test images those groups compare; None: every test image
      evaluated (see `num_examples`).
    precision_recall_k: the k of the k-nearest-neighbour balls of `precision_recall`.
  """

  iw_samples: int = 1000
  iw_chunk: int = 100
  iw_batch_size: int = 100
  batch_size: int | None = None
  num_examples: int | None = None
  disentanglement_seed: int = 0
  disentanglement_scale: float = 1.0
  ais_settings: ais.Settings = dataclasses.field(default_factory=ais.Settings)
  bdmc_examples: int = 100
  features_workdir: str | None = None
  sample_quality_n: int | None = None
  precision_recall_k: int = 3

  def validate(self, num_devices: int, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a value that cannot work on `num_devices` devices."""
    for name in ("iw_samples", "iw_chunk"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)} must be >= 1.")
    if self.num_examples is not None and self.num_examples < 1:
      raise ConfigError(f"num_examples={self.num_examples} must be >= 1.")
    if not self.disentanglement_scale > 0:
      raise ConfigError(f"disentanglement_scale={self.disentanglement_scale} must be > 0.")
    if self.bdmc_examples < 1:
      raise ConfigError(f"bdmc_examples={self.bdmc_examples} must be >= 1.")
    if self.precision_recall_k < 1:
      raise ConfigError(f"precision_recall_k={self.precision_recall_k} must be >= 1.")
    if self.sample_quality_n is not None and self.sample_quality_n < 2:
      raise ConfigError(f"sample_quality_n={self.sample_quality_n} must be >= 2.")
    self.ais_settings.validate(num_devices)
    for name, size in (
      ("iw_batch_size", self.iw_batch_size),
      ("batch_size", self.eval_batch(config)),
    ):
      if size < 1:
        raise ConfigError(f"{name}={size} must be >= 1.")

  def eval_batch(self, config: ml_collections.ConfigDict) -> int:
    """Batch size for `elbo` and `diagnostics`."""
    return self.batch_size or config.data.eval_batch_size


def select_metrics(
  requested: Sequence[str] | None, config: ml_collections.ConfigDict, dataset: Dataset
) -> list[str]:
  """Expands and checks metric names; None picks every group that applies to the run.

  Raises:
    ConfigError: an unknown name, or a metric the model or dataset does not support.
  """
  caps = family(config.model.name).capabilities
  name = config.model.name
  ground_truth = isinstance(dataset, GroundTruthDataset)
  reasons = {
    "elbo": None if caps.prior else f"model.name={name!r} has no prior",
    "iw_nll": None
    if caps.density
    else f"it needs a model with log q(z|x) and log p(z), not model.name={name!r}",
    "diagnostics": None,
  }
  for group in SAMPLE_QUALITY:
    reasons[group] = None if caps.prior else f"model.name={name!r} has no prior to sample"
  for group in ("ais", "bdmc"):
    reasons[group] = (
      None
      if caps.joint_density
      else "it needs a model whose log p(z) and p(x|z) are explicit in z "
      f"(capabilities.joint_density), not model.name={name!r}"
    )
  for metric in DISENTANGLEMENT:
    reasons[metric] = (
      None if ground_truth else f"data.name={config.data.name!r} has no ground truth"
    )
    if metric in ("mig", "sap") and config.model.latent_dim < 2:
      reasons[metric] = reasons[metric] or "it needs model.latent_dim >= 2"
  if requested is None:
    return [g for g in GROUPS if reasons[g] is None and g not in ON_REQUEST]
  selected = []
  for metric in requested:
    if metric not in GROUPS and metric not in ALIASES:
      raise ConfigError(f"Unknown metric {metric!r}; choose from {(*GROUPS, *ALIASES)}.")
    for group in ALIASES.get(metric, (metric,)):
      if reasons[group] is not None:
        raise ConfigError(f"Metric {group!r} does not apply to this run: {reasons[group]}.")
      if group not in selected:
        selected.append(group)
  return selected


def check_requests(
  groups: Sequence[str], options: EvalOptions, config: ml_collections.ConfigDict, dataset: Dataset
) -> None:
  """Checks what the groups need beyond the run (see `sample_quality.check`): ConfigError if not."""
  if set(groups) & set(SAMPLE_QUALITY):
    sample_quality.check(
      options.features_workdir,
      config.data.name,
      dataset.image_shape,
      options.sample_quality_n,
      _num_test(options, dataset),
      options.precision_recall_k,
    )


def _num_test(options: EvalOptions, dataset: Dataset) -> int:
  n = len(dataset.test_images)
  return min(n, options.num_examples or n)


def evaluate_run(
  run: runs.Run,
  metric_names: Sequence[str] | None = None,
  options: EvalOptions | None = None,
  checkpoint: str | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> dict[str, dict]:
  """Evaluates a restored run, writes the results (see module docstring) and returns them.

  Args:
    run: from `runs.open_run`.
    metric_names: groups or aliases (see `GROUPS`, `ALIASES`); None: every group that applies.
    options: sample counts, batch sizes and seeds.
    checkpoint: how the checkpoint was asked for ('latest', 'best', a step), recorded with the
      results; default the step.
    mesh: devices to evaluate on; default all local devices.

  Returns:
    {group: {'step', 'checkpoint', **values}}.

  Raises:
    ConfigError: bad metric names or options (before anything is compiled).
  """
  options = options or EvalOptions()
  mesh = mesh or meshes.make_mesh()
  groups = select_metrics(metric_names, run.config, run.dataset)
  options.validate(mesh.size, run.config)
  check_requests(groups, options, run.config, run.dataset)
  inference = Inference(run.model, run.model_vars, run.config, mesh)
  out_dir = os.path.join(run.workdir, EVAL_DIR)
  os.makedirs(out_dir, exist_ok=True)
  writer = runs.metric_writer(out_dir)
  compute = _group_computations(run, inference, options)
  results = {}
  for group in groups:
    values = compute(group)
    record = {"step": run.step, "checkpoint": checkpoint or str(run.step), **values}
    _save(run.workdir, group, record)
    scalars = {
      f"{group}/{k}": float(v)
      for k, v in values.items()
      if k not in _SETTINGS and isinstance(v, int | float)
    }
    writer.write_scalars(run.step, scalars)
    writer.flush()
    results[group] = record
  writer.close()
  return results


def _group_computations(
  run: runs.Run, inference: Inference, options: EvalOptions
) -> Callable[[str], dict]:
  """`compute(group) -> values` on the run's test split; the ELBO is computed once and shared."""
  n = _num_test(options, run.dataset)
  images = run.dataset.test_images[:n]
  labels = None if run.dataset.test_labels is None else run.dataset.test_labels[:n]
  rng = likelihood.evaluation_key(run.config.seed)
  cache = {}

  def elbo_means():
    if "elbo" not in cache:
      cache["elbo"] = likelihood.elbo_means(
        run.model,
        inference.model_vars,
        images,
        labels,
        run.config,
        inference.mesh,
        rng,
        options.eval_batch(run.config),
      )
    return cache["elbo"]

  def feature_sets():
    if "features" not in cache:
      n_samples, y = options.sample_quality_n or n, inference.labels(labels)
      cache["features"] = sample_quality.feature_sets(
        inference, images, y, run.config.seed, n_samples, options.features_workdir
      )
    return cache["features"]

  def compute(group: str) -> dict:
    if group == "elbo":
      return _elbo(elbo_means(), images)
    if group == "iw_nll":
      return likelihood.estimate(
        run.model,
        inference.model_vars,
        images,
        labels,
        run.config,
        inference.mesh,
        num_samples=options.iw_samples,
        chunk=min(options.iw_chunk, options.iw_samples),
        batch_size=options.iw_batch_size,
        elbo=elbo_means(),
      )
    if group in ("ais", "bdmc"):
      return _annealed(group, run, inference, images, labels, options)
    if group in SAMPLE_QUALITY:
      k = options.precision_recall_k
      return sample_quality.scores(group, feature_sets(), k, options.features_workdir)
    if group == "diagnostics":
      return _diagnostics(inference.encode_evaluated(images, labels, rng), len(images))
    return _disentanglement(run.dataset.data, representation_fn(inference), group, options)

  return compute


def _annealed(
  group: str,
  run: runs.Run,
  inference: Inference,
  images: np.ndarray,
  labels: np.ndarray | None,
  options: EvalOptions,
) -> dict:
  """`ais` on the images, or `bdmc` on `options.bdmc_examples` examples simulated from the model."""
  settings, model_vars, mesh = options.ais_settings, inference.model_vars, inference.mesh
  if group == "ais":
    y = inference.labels(labels)
    return ais.estimate(run.model, model_vars, images, y, run.config, mesh, settings)
  n = options.bdmc_examples
  y = inference.labels(None if labels is None else np.resize(labels, n))
  return bdmc.bdmc(run.model, model_vars, n, y, run.config, mesh, settings)


def _elbo(means: dict, images: np.ndarray) -> dict:
  nll = float(-means["elbo"])
  values = {
    "nll_elbo": nll,
    "nll_elbo_bits_per_dim": likelihood.bits_per_dim(nll, images.shape[1:]),
  }
  values.update({k: float(v) for k, v in means.items() if np.ndim(v) == 0})
  return values | {"num_examples": len(images)}


def _diagnostics(posterior, num_examples: int) -> dict:
  """Active units and posterior statistics on exactly the (binarized) images the likelihoods see."""
  units = diagnostics.active_units(posterior.mean, ACTIVE_THRESHOLD)
  values = {
    "num_active_units": units["num_active"],
    "active_units": np.flatnonzero(units["active"]).tolist(),
    "active_threshold": ACTIVE_THRESHOLD,
    "posterior_mean_variance_per_dim": units["variances"].tolist(),
    "latent_dim": int(posterior.mean.shape[1]),
    "num_examples": num_examples,
  }
  if posterior.logvar is not None:
    summary = diagnostics.posterior_summary(posterior.mean, posterior.logvar)
    values.update({k: v.tolist() if np.ndim(v) else v for k, v in summary.items()})
  return values


def representation_fn(inference: Inference) -> Callable[[np.ndarray], np.ndarray]:
  """uint8 images [n, H, W, C] -> posterior means [n, d] (float64), for the metrics.

  Batches of at most `REPRESENTATION_BATCH` from a few fixed sizes, so that the calls of a metric
  compile once or twice.
  """
  inference = dataclasses.replace(inference, batch_size=REPRESENTATION_BATCH)
  return lambda images: inference.posterior_means(images).astype(np.float64)


def _disentanglement(data, encode, name: str, options: EvalOptions) -> dict:
  parameters = inspect.signature(disentanglement.DISENTANGLEMENT_METRICS[name]).parameters
  settings = {
    k: max(1, round(parameters[k].default * options.disentanglement_scale))
    for k in SAMPLE_COUNTS
    if k in parameters
  }
  if name in ENCODE_BATCH_ONLY:
    settings["batch_size"] = 256
  scores = disentanglement.evaluate_disentanglement(
    data, encode, options.disentanglement_seed, metrics=(name,), **{name: settings}
  )
  return {
    **scores,
    "seed": options.disentanglement_seed,
    "scale": options.disentanglement_scale,
    "settings": settings,
  }


def _save(workdir: str, group: str, record: dict) -> None:
  """Writes `eval/<group>.json`, merges the group into eval/results.json, appends the history."""
  out_dir = os.path.join(workdir, EVAL_DIR)
  runs.write_json(os.path.join(out_dir, f"{group}.json"), record)
  path = os.path.join(out_dir, "results.json")
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged[group] = record
  runs.write_json(path, merged)
  runs.append_history(workdir, {"metric": group, **record})
