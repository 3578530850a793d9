"""Tools that decode chosen latents: sample, interpolate, traverse and arithmetic."""

import dataclasses

import numpy as np

from vae_jax import runs
from vae_jax.evaluation.images import image_grid
from vae_jax.tools import common
from vae_jax.tools.common import require

KL_EXAMPLES = 1000  # Test examples whose mean KL per dimension orders the traversal rows.


# sample


@dataclasses.dataclass
class SampleOptions(common.Options):
  """num: samples; temperature: prior std scale; label: one class for all (CVAE only)."""

  num: int = 64
  temperature: float = 1.0
  label: int | None = None


def check_sample(run: runs.Run, o: SampleOptions) -> None:
  """Checks sample's options against the run."""
  require(
    run.model.capabilities.prior,
    f"model.name={run.config.model.name!r} has no prior to sample from (an autoencoder); "
    "use reconstruct, interpolate or traverse.",
  )
  common.check_positive(o.num, "--num")
  require(o.temperature >= 0, f"--temperature={o.temperature} must be >= 0.")
  if o.label is not None:
    require(
      common.is_conditional(run),
      f"--label needs a class-conditional model; model.name={run.config.model.name!r} is not one.",
    )
    common.check_class(run, o.label, "--label")


SAMPLE = common.Command("sample", SampleOptions, check_sample, "sample")


def run_sample(run: runs.Run, **options) -> dict:
  """Decoded prior samples; a conditional model gets one class per column unless --label is set."""
  o = SAMPLE.parse(run, options)
  key = common.tool_key(run, o.seed, "sample")
  labels, ncol = None, common.grid_columns(o.num)
  if common.is_conditional(run):
    k = run.dataset.num_classes
    labels = np.full(o.num, o.label) if o.label is not None else np.arange(o.num) % k
    ncol = ncol if o.label is not None else min(k, o.num)
  images = common.inference(run).prior_samples(key, o.num, labels, o.temperature)
  with SAMPLE.outputs(run, o) as out:
    out.save_image(image_grid(np.asarray(images), ncol))
  return {"files": out.files, "images": np.asarray(images), "labels": labels}


# interpolate


@dataclasses.dataclass
class InterpolateOptions(common.Options):
  """index_a, index_b: test examples; steps: points including both ends; mode: a path or 'both'.

  The paths are the code's (`Model.code_space`): 'linear' and 'slerp' for real latents, 'linear'
  (in class probabilities) and 'logit' (in log-probabilities) for categorical ones; 'both' draws
  each.
  """

  index_a: int = 0
  index_b: int = 1
  steps: int = 10
  mode: str = "both"


def interpolation_modes(run: runs.Run) -> tuple[str, ...]:
  """The --mode values of the run's code: its paths ('linear', 'slerp' or 'logit'), and 'both'."""
  return (*run.model.code_space().modes, "both")


def check_interpolate(run: runs.Run, o: InterpolateOptions) -> None:
  """Checks interpolate's options against the run."""
  common.check_index(run, o.index_a, "--index_a")
  common.check_index(run, o.index_b, "--index_b")
  require(o.steps >= 2, f"--steps={o.steps} must be >= 2.")
  modes = interpolation_modes(run)
  require(o.mode in modes, f"--mode={o.mode!r} is not one of {modes}.")


INTERPOLATE = common.Command("interpolate", InterpolateOptions, check_interpolate, "interpolate")


def run_interpolate(run: runs.Run, **options) -> dict:
  """Decodes paths between two test inputs' posterior means; each row is [a, path..., b].

  A conditional model decodes each point with the label of the nearer end.
  """
  o = INTERPOLATE.parse(run, options)
  space = run.model.code_space()
  images, labels = common.split_arrays(run, "test")
  idx = np.array([o.index_a, o.index_b])
  ends_labels = None if labels is None else labels[idx]
  mu = common.inference(run).posterior_means(images[idx], ends_labels)
  t = np.linspace(0.0, 1.0, o.steps)
  path_labels = None if labels is None else np.where(t < 0.5, ends_labels[0], ends_labels[1])
  modes = space.modes if o.mode == "both" else (o.mode,)
  decoded = {
    m: common.inference(run).decode(space.path(mu[0], mu[1], t, m).astype(np.float32), path_labels)
    for m in modes
  }
  x = np.asarray(common.inference(run).inputs(images[idx]))
  rows = [np.concatenate([x[:1], decoded[m], x[1:]]) for m in modes]
  with INTERPOLATE.outputs(run, o) as out:
    out.save_image(image_grid(np.concatenate(rows), ncol=o.steps + 2))
  return {"files": out.files, "images": decoded, "latents": mu, "t": t}


# traverse


@dataclasses.dataclass
class TraverseOptions(common.Options):
  """index: test example; range: values in [-range, range]; steps: values; dims: 'all' or '0,3'.

  A categorical latent takes each of its classes instead of `range` and `steps`.
  """

  index: int = 0
  range: float = 3.0
  steps: int = 10
  dims: str = "all"


def _dims(run: runs.Run, dims: str) -> list[int]:
  d = run.config.model.latent_dim
  if dims == "all":
    return list(range(d))
  try:
    chosen = [int(v) for v in dims.split(",")]
  except ValueError:
    raise common.ToolError(f"--dims={dims!r} is not 'all' or a list like '0,3,5'.") from None
  bad = [v for v in chosen if not 0 <= v < d]
  require(not bad, f"--dims={dims!r}: {bad} outside 0..{d - 1} (model.latent_dim={d}).")
  return list(dict.fromkeys(chosen))


def check_traverse(run: runs.Run, o: TraverseOptions) -> None:
  """Checks traverse's options against the run."""
  common.check_index(run, o.index, "--index")
  require(o.range > 0, f"--range={o.range} must be > 0.")
  require(o.steps >= 2, f"--steps={o.steps} must be >= 2.")
  _dims(run, o.dims)


TRAVERSE = common.Command("traverse", TraverseOptions, check_traverse, "traverse")


def kl_per_dim(run: runs.Run) -> np.ndarray | None:
  """Mean KL(q(z_j|x) || p(z_j)) per latent over test examples; None when the code has none.

  A Gaussian posterior's KL to N(0, 1) per dimension, a categorical code's KL to the uniform
  categorical per variable (`Model.code_space`).
  """
  images, labels = common.split_arrays(run, "test")
  n = min(KL_EXAMPLES, len(images))
  post = common.inference(run).encode(images[:n], None if labels is None else labels[:n])
  kl = run.model.code_space().latent_kl(post.mean, post.logvar)
  return None if kl is None else kl.mean(axis=0)


def run_traverse(run: runs.Run, **options) -> dict:
  """Row r sweeps one latent over [-range, range], the others at the input's posterior mean.

  A categorical latent (`codes.CategoricalCodes`) is set to each of its classes instead. Rows are
  ordered by decreasing mean KL when the code has one (by index otherwise).
  """
  o = TRAVERSE.parse(run, options)
  images, labels = common.split_arrays(run, "test")
  label = None if labels is None else labels[o.index : o.index + 1]
  mu = common.inference(run).posterior_means(images[o.index : o.index + 1], label)[0]
  dims = np.array(_dims(run, o.dims))
  kl = kl_per_dim(run)
  if kl is not None:
    dims = dims[np.argsort(-kl[dims], kind="stable")]
  values = np.linspace(-o.range, o.range, o.steps, dtype=np.float32)
  z = run.model.code_space().traversal(mu[None], dims, values)[0]
  ncol = z.shape[1]
  z = z.reshape(-1, mu.shape[-1])
  decoded = common.inference(run).decode(z, None if label is None else np.repeat(label, len(z)))
  with TRAVERSE.outputs(run, o) as out:
    out.save_image(image_grid(decoded, ncol=ncol))
  return {"files": out.files, "dims": dims.tolist(), "kl_per_dim": kl, "images": decoded}


# arithmetic


@dataclasses.dataclass
class ArithmeticOptions(common.Options):
  """a, b, c: classes; the result decodes mean(a) - mean(b) + mean(c) of the posterior means."""

  a: int | None = None
  b: int | None = None
  c: int | None = None


def check_arithmetic(run: runs.Run, o: ArithmeticOptions) -> None:
  """Checks arithmetic's options against the run."""
  require(
    None not in (o.a, o.b, o.c), "arithmetic needs three classes: --a=LABEL --b=LABEL --c=LABEL."
  )
  for flag in ("a", "b", "c"):
    common.check_class(run, getattr(o, flag), f"--{flag}")
  require(
    not common.is_conditional(run),
    f"model.name={run.config.model.name!r} takes the class as an input, so its latents carry no "
    "class to add or subtract; use sample --label instead.",
  )


ARITHMETIC = common.Command("arithmetic", ArithmeticOptions, check_arithmetic, "arithmetic")


def class_means(run: runs.Run, classes) -> np.ndarray:
  """Mean posterior mean of the test examples of each class: [len(classes), latent_dim]."""
  images, labels = common.split_arrays(run, "test")
  mu = common.inference(run).posterior_means(images, labels)
  counts = [int((labels == k).sum()) for k in classes]
  missing = [k for k, n in zip(classes, counts, strict=True) if n == 0]
  require(not missing, f"the test split has no examples of class {missing}.")
  return np.stack([mu[labels == k].mean(axis=0) for k in classes])


def run_arithmetic(run: runs.Run, **options) -> dict:
  """Decodes the class means of a, b, c and of a - b + c, in one row."""
  o = ARITHMETIC.parse(run, options)
  means = class_means(run, (o.a, o.b, o.c))
  result = means[0] - means[1] + means[2]
  latents = np.concatenate([means, result[None]])
  decoded = common.inference(run).decode(latents)
  with ARITHMETIC.outputs(run, o) as out:
    out.save_image(image_grid(decoded, ncol=4))
  return {"files": out.files, "latents": latents, "images": decoded}
