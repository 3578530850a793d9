"""Evaluation of a restored run: likelihoods, latent diagnostics and disentanglement metrics.

`evaluate_run(run, metrics)` computes the named metric groups on the run's test split and writes,
per group, `<workdir>/eval/<group>.json` (the latest evaluation), a line in
`<workdir>/eval/history.jsonl` (every evaluation), the group's entry in
`<workdir>/eval/results.json` (merged with the other groups already there) and TensorBoard scalars
`<group>/<value>` in `<workdir>/eval` at the checkpoint's step. `python -m vae_jax.evaluate` is its
command line.

Groups: `elbo` (single-sample ELBO as training evaluates it), `iw_nll` (importance-weighted NLL,
see `likelihood`), `diagnostics` (active units, KL per dimension, posterior variance) and the
disentanglement metrics of `metrics.DISENTANGLEMENT_METRICS` (`disentanglement` names them all),
which need a ground-truth dataset.
"""

import dataclasses
import inspect
import json
import math
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from clu import metric_writers

from vae_jax import likelihood, metrics, model_fns, parallel, runs, steps
from vae_jax.config_checks import ConfigError
from vae_jax.data import Dataset, GroundTruthDataset
from vae_jax.data.pipeline import eval_batches
from vae_jax.data.preprocess import preprocess
from vae_jax.models import IMPORTANCE_WEIGHTED_MODELS, build_model

EVAL_DIR = "eval"
DISENTANGLEMENT = tuple(metrics.DISENTANGLEMENT_METRICS)
GROUPS = ("elbo", "iw_nll", "diagnostics", *DISENTANGLEMENT)
ALIASES = {"disentanglement": DISENTANGLEMENT}
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015.
# Arguments of the disentanglement metrics that count samples (scaled by `disentanglement_scale`).
SAMPLE_COUNTS = ("num_train", "num_eval", "num_test", "num_variance_estimate")
# Metrics whose `batch_size` only sets how many images are encoded per call.
ENCODE_BATCH_ONLY = ("mig", "dci", "sap")
_SETTINGS = frozenset(
  {"step", "num_examples", "iw_samples", "iw_chunk", "latent_dim", "seed", "scale"}
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
  """

  iw_samples: int = 1000
  iw_chunk: int = 100
  iw_batch_size: int = 100
  batch_size: int | None = None
  num_examples: int | None = None
  disentanglement_seed: int = 0
  disentanglement_scale: float = 1.0

  def validate(self, num_devices: int, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a value that cannot work on `num_devices` devices."""
    for name in ("iw_samples", "iw_chunk"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)} must be >= 1.")
    if self.num_examples is not None and self.num_examples < 1:
      raise ConfigError(f"num_examples={self.num_examples} must be >= 1.")
    if not self.disentanglement_scale > 0:
      raise ConfigError(f"disentanglement_scale={self.disentanglement_scale} must be > 0.")
    for name, size in (
      ("iw_batch_size", self.iw_batch_size),
      ("batch_size", self.eval_batch(config)),
    ):
      if size < 1 or size % num_devices:
        raise ConfigError(
          f"{name}={size} must be a positive multiple of the {num_devices} devices."
        )

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
  model = build_model(config.model, dataset.image_shape, dataset.num_classes)
  ground_truth = isinstance(dataset, GroundTruthDataset)
  reasons = {
    "elbo": None
    if model_fns.has_prior(model)
    else f"model.name={config.model.name!r} has no prior",
    "iw_nll": None
    if config.model.name in IMPORTANCE_WEIGHTED_MODELS
    else f"it needs a model with log q(z|x) and log p(z) {IMPORTANCE_WEIGHTED_MODELS}, not "
    f"model.name={config.model.name!r}",
    "diagnostics": None,
  }
  for name in DISENTANGLEMENT:
    reasons[name] = None if ground_truth else f"data.name={config.data.name!r} has no ground truth"
    if name in ("mig", "sap") and config.model.latent_dim < 2:
      reasons[name] = reasons[name] or "it needs model.latent_dim >= 2"
  if requested is None:
    return [g for g in GROUPS if reasons[g] is None]
  selected = []
  for name in requested:
    if name not in GROUPS and name not in ALIASES:
      raise ConfigError(f"Unknown metric {name!r}; choose from {(*GROUPS, *ALIASES)}.")
    for group in ALIASES.get(name, (name,)):
      if reasons[group] is not None:
        raise ConfigError(f"Metric {group!r} does not apply to this run: {reasons[group]}.")
      if group not in selected:
        selected.append(group)
  return selected


def evaluate_run(
  run: runs.Run,
  metric_names: Sequence[str] | None = None,
  options: EvalOptions | None = None,
  checkpoint: str | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> dict[str, dict]:
  """Evaluates a restored run, writes the results (see module docstring) and returns them.

  Args:
    run: from `runs.load_run`.
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
  mesh = mesh or parallel.make_mesh()
  groups = select_metrics(metric_names, run.config, run.dataset)
  options.validate(mesh.size, run.config)
  model_vars = jax.device_put(run.model_vars, parallel.replicated(mesh))
  n = len(run.dataset.test_images)
  n = min(n, options.num_examples or n)
  images = run.dataset.test_images[:n]
  labels = None if run.dataset.test_labels is None else run.dataset.test_labels[:n]
  out_dir = os.path.join(run.workdir, EVAL_DIR)
  os.makedirs(out_dir, exist_ok=True)
  writer = metric_writers.create_default_writer(out_dir, just_logging=jax.process_index() > 0)
  results = {}
  rng = likelihood.evaluation_key(run.config.seed)
  elbo = None  # Computed once for both `elbo` and `iw_nll`.
  encode = representation_fn(run, model_vars, mesh)  # Shared by the metrics: compiled once.
  if "elbo" in groups or "iw_nll" in groups:
    batch = options.eval_batch(run.config)
    elbo = likelihood.elbo_means(
      run.model, model_vars, images, labels, run.config, mesh, rng, batch
    )
  for group in groups:
    if group == "elbo":
      values = _elbo(elbo, images)
    elif group == "iw_nll":
      values = likelihood.estimate(
        run.model,
        model_vars,
        images,
        labels,
        run.config,
        mesh,
        num_samples=options.iw_samples,
        chunk=min(options.iw_chunk, options.iw_samples),
        batch_size=options.iw_batch_size,
        elbo=elbo,
      )
    elif group == "diagnostics":
      values = _diagnostics(run, model_vars, images, labels, mesh, options)
    else:
      values = _disentanglement(run.dataset.data, encode, group, options)
    record = {"step": run.step, "checkpoint": checkpoint or str(run.step), **values}
    _save(out_dir, group, record)
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


def _elbo(means: dict, images: np.ndarray) -> dict:
  nll = float(-means["elbo"])
  values = {
    "nll_elbo": nll,
    "nll_elbo_bits_per_dim": likelihood.bits_per_dim(nll, images.shape[1:]),
  }
  values.update({k: float(v) for k, v in means.items() if np.ndim(v) == 0})
  return values | {"num_examples": len(images)}


def _diagnostics(run, model_vars, images, labels, mesh, options) -> dict:
  """Active units and posterior statistics on exactly the (binarized) images the likelihoods see."""
  model, data = run.model, run.config.data

  @jax.jit
  def encode(model_vars, batch, rng):
    data_keys, _ = steps.split_example_keys(parallel.index_keys(rng, batch["index"]))
    x = preprocess(batch["image"], data_keys, data.binarize, data.binarize_threshold)
    return model.apply(model_vars, x, batch.get("label"), method=model.encode)

  rng = likelihood.evaluation_key(run.config.seed)
  sharding = parallel.batch_sharded(mesh)
  parts = []
  for batch in eval_batches(images, labels, options.eval_batch(run.config)):
    code = jax.device_get(encode(model_vars, jax.device_put(batch, sharding), rng))
    code = code if isinstance(code, tuple) else (code,)
    parts.append([np.asarray(c)[batch["mask"] > 0] for c in code])
  code = [np.concatenate(c) for c in zip(*parts, strict=True)]
  units = metrics.active_units(code[0], ACTIVE_THRESHOLD)
  values = {
    "num_active_units": units["num_active"],
    "active_units": np.flatnonzero(units["active"]).tolist(),
    "active_threshold": ACTIVE_THRESHOLD,
    "posterior_mean_variance_per_dim": units["variances"].tolist(),
    "latent_dim": int(code[0].shape[1]),
    "num_examples": len(images),
  }
  if len(code) == 2:  # (mu, logvar): a Gaussian posterior.
    summary = metrics.posterior_summary(*code)
    values.update({k: v.tolist() if np.ndim(v) else v for k, v in summary.items()})
  return values


def representation_fn(
  run: runs.Run, model_vars: dict, mesh: jax.sharding.Mesh, max_batch: int = 256
) -> Callable[[np.ndarray], np.ndarray]:
  """uint8 images [n, H, W, C] -> posterior means [n, d] (float64), jitted and batched.

  Images are scaled to [0, 1] (and thresholded when the run thresholds); dynamically binarized runs
  see the intensities, the deterministic input. Inputs are padded to a few fixed sizes so that the
  calls of a metric compile once or twice.
  """
  model, data = run.model, run.config.data
  binarize = "none" if data.binarize == "dynamic" else data.binarize

  @jax.jit
  def codes(model_vars, images):
    x = preprocess(images, None, binarize, data.binarize_threshold)
    return model_fns.posterior_mean(model, model_vars, x)

  sharding = parallel.batch_sharded(mesh)

  def fn(images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), max_batch):
      part = images[start : start + max_batch]
      size = min(max_batch, max(16, 2 ** math.ceil(math.log2(len(part)))))
      size = -(-size // mesh.size) * mesh.size
      padded = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), part.dtype)])
      out.append(np.asarray(codes(model_vars, jax.device_put(padded, sharding)))[: len(part)])
    return np.concatenate(out).astype(np.float64)

  return fn


def _disentanglement(data, encode, name: str, options: EvalOptions) -> dict:
  parameters = inspect.signature(metrics.DISENTANGLEMENT_METRICS[name]).parameters
  settings = {
    k: max(1, round(parameters[k].default * options.disentanglement_scale))
    for k in SAMPLE_COUNTS
    if k in parameters
  }
  if name in ENCODE_BATCH_ONLY:
    settings["batch_size"] = 256
  scores = metrics.evaluate_disentanglement(
    data,
    encode,
    options.disentanglement_seed,
    metrics=(name,),
    **{name: settings},
  )
  return {
    **scores,
    "seed": options.disentanglement_seed,
    "scale": options.disentanglement_scale,
    "settings": settings,
  }


def _save(out_dir: str, group: str, record: dict) -> None:
  """Writes `<group>.json`, appends to history.jsonl and merges the group into results.json."""
  _write_json(os.path.join(out_dir, f"{group}.json"), record)
  with open(os.path.join(out_dir, "history.jsonl"), "a") as f:
    f.write(json.dumps({"metric": group, **record}) + "\n")
  path = os.path.join(out_dir, "results.json")
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged[group] = record
  _write_json(path, merged)


def _write_json(path: str, value: dict) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2)
  os.replace(path + ".tmp", path)
