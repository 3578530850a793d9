"""Tools that decode chosen latents: sample, interpolate, traverse and arithmetic."""

import dataclasses

import numpy as np

from vae_jax import runs
from vae_jax.evaluation.images import image_grid
from vae_jax.losses.distributions import kl_standard_normal
from vae_jax.tools import common
from vae_jax.tools.common import require

MODES = ("linear", "slerp", "both")
KL_EXAMPLES = 1000  # Test examples whose mean KL per dimension orders the traversal rows.


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation from a (t=0) to b (t=1) for each t; linear when a and b are parallel.

  Returns:
    [len(t), d] points. The angle is measured between the directions of a and b; the magnitudes are
    interpolated along with it (as in White 2016, "Sampling Generative Networks").
  """
  a, b, t = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(t, np.float64)[:, None]
  cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * a + t * b
  return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Linear interpolation from a (t=0) to b (t=1): [len(t), d]."""
  t = np.asarray(t, np.float64)[:, None]
  return (1 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)


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
  """index_a, index_b: test examples; steps: points including both ends; mode: linear|slerp|both."""

  index_a: int = 0
  index_b: int = 1
  steps: int = 10
  mode: str = "both"


def check_interpolate(run: runs.Run, o: InterpolateOptions) -> None:
  """Checks interpolate's options against the run."""
  common.check_index(run, o.index_a, "--index_a")
  common.check_index(run, o.index_b, "--index_b")
  require(o.steps >= 2, f"--steps={o.steps} must be >= 2.")
  require(o.mode in MODES, f"--mode={o.mode!r} is not one of {MODES}.")


INTERPOLATE = common.Command("interpolate", InterpolateOptions, check_interpolate, "interpolate")


def run_interpolate(run: runs.Run, **options) -> dict:
  """Decodes paths between two test inputs' posterior means; each row is [a, path..., b].

  A conditional model decodes each point with the label of the nearer end.
  """
  o = INTERPOLATE.parse(run, options)
  images, labels = common.split_arrays(run, "test")
  idx = np.array([o.index_a, o.index_b])
  ends_labels = None if labels is None else labels[idx]
  mu = common.inference(run).posterior_means(images[idx], ends_labels)
  t = np.linspace(0.0, 1.0, o.steps)
  path_labels = None if labels is None else np.where(t < 0.5, ends_labels[0], ends_labels[1])
  modes = ("linear", "slerp") if o.mode == "both" else (o.mode,)
  paths = {"linear": lerp, "slerp": slerp}
  decoded = {
    m: common.inference(run).decode(paths[m](mu[0], mu[1], t).astype(np.float32), path_labels)
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
  """index: test example; range: values in [-range, range]; steps: values; dims: 'all' or '0,3'."""

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
  """Mean KL(q(z_j|x) || N(0, 1)) per dimension over test examples; None without a Gaussian q."""
  images, labels = common.split_arrays(run, "test")
  n = min(KL_EXAMPLES, len(images))
  post = common.inference(run).encode(images[:n], None if labels is None else labels[:n])
  if post.logvar is None:
    return None
  return np.asarray(kl_standard_normal(post.mean, post.logvar)).mean(axis=0)


def run_traverse(run: runs.Run, **options) -> dict:
  """Row r sweeps one latent over [-range, range], the others at the input's posterior mean.

  Rows are ordered by decreasing mean KL when the posterior is Gaussian (by index otherwise).
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
  z = np.tile(mu, (len(dims), o.steps, 1))
  z[np.arange(len(dims))[:, None], np.arange(o.steps)[None, :], dims[:, None]] = values
  z = z.reshape(-1, mu.shape[-1])
  decoded = common.inference(run).decode(z, None if label is None else np.repeat(label, len(z)))
  with TRAVERSE.outputs(run, o) as out:
    out.save_image(image_grid(decoded, ncol=o.steps))
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
