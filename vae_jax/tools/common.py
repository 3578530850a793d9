"""What every tool shares: opening a run, checks, batched model calls, keys and output files.

A tool is a pair `check_<command>(run, options)` (reads only the config, dataset and model, so the
CLI runs it before anything is restored or compiled) and `run_<command>(run, **options) -> dict`.
"""

import dataclasses
import functools
import json
import os
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from clu import metric_writers
from matplotlib.figure import Figure
from PIL import Image

from vae_jax import model_fns, parallel, runs
from vae_jax.checkpointing import Checkpointer
from vae_jax.data import Dataset, load_dataset
from vae_jax.data.preprocess import preprocess
from vae_jax.models import CONDITIONAL_MODELS, build_model

matplotlib.use("Agg")

TOOLS_DIR = "tools"
BATCH_SIZE = 500  # Examples per jitted call; every call has this shape (the last batch is padded).


class ToolError(ValueError):
  """A tool cannot do what was asked of this run; the message says why and what to do instead."""


def require(ok: bool, message: str) -> None:
  """Raises `ToolError(message)` unless `ok`."""
  if not ok:
    raise ToolError(message)


@dataclasses.dataclass
class Options:
  """Options of every tool.

  Attributes:
    seed: the tool's randomness; default the run's `config.seed`.
    out: the output file name (without directory); default the command's name.
  """

  seed: int | None = None
  out: str | None = None


def describe_run(
  workdir: str,
  checkpoint: str = "latest",
  *,
  manual_dir: str | None = None,
  dataset: Dataset | None = None,
) -> runs.Run:
  """A run's config, dataset, model and checkpoint step, without restoring its variables.

  Enough to check a tool's options; `model_vars` is None until `restore`.

  Raises:
    CheckpointError: the workdir is not a run or has no such checkpoint.
  """
  config = runs.load_config(workdir)
  if manual_dir:
    config.data.manual_dir = manual_dir
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  step = runs.resolve_step(workdir, str(checkpoint), ckpt.all_steps())
  ckpt.close()
  dataset = dataset or load_dataset(config.data)
  model = build_model(config.model, dataset.image_shape, dataset.num_classes)
  return runs.Run(workdir, config, model, None, dataset, step)


def restore(run: runs.Run) -> runs.Run:
  """Restores the variables of a `describe_run` result onto one device."""
  overrides = {"data.manual_dir": run.config.data.manual_dir} if run.config.data.manual_dir else {}
  return runs.load_run(
    run.workdir,
    str(run.step),
    mesh=parallel.make_mesh(jax.local_devices()[:1]),
    dataset=run.dataset,
    config_overrides=overrides,
  )


def open_run(
  workdir: str,
  checkpoint: str = "latest",
  *,
  manual_dir: str | None = None,
  dataset: Dataset | None = None,
) -> runs.Run:
  """`describe_run` and `restore` in one: a run ready for any `run_<command>`."""
  return restore(describe_run(workdir, checkpoint, manual_dir=manual_dir, dataset=dataset))


@dataclasses.dataclass(frozen=True)
class Command:
  """A tool's name, options dataclass, check and default file stem.

  Attributes:
    name: the CLI command.
    options: the options dataclass (a subclass of `Options`).
    check: `check(run, options)` raises `ToolError` for options the run cannot serve.
    stem: the default output stem, formatted with the options (e.g. 'augment_{split}').
  """

  name: str
  options: type
  check: Callable
  stem: str

  def parse(self, run: runs.Run, options: dict):
    """Builds and checks the options; also checks that `out` names a new file."""
    names = {f.name for f in dataclasses.fields(self.options)}
    unknown = sorted(set(options) - names)
    require(not unknown, f"{self.name} does not take {unknown}; it takes {sorted(names)}.")
    parsed = self.options(**options)
    self.check(run, parsed)
    self.outputs(run, parsed)
    return parsed

  def outputs(self, run: runs.Run, options) -> "Outputs":
    """The output files of one call."""
    return Outputs(run, self.stem.format(**dataclasses.asdict(options)), options.out)


# Facts about the run that checks need.


def has_labels(run: runs.Run) -> bool:
  """Whether the dataset's test split is labelled."""
  return bool(run.dataset.num_classes) and run.dataset.test_labels is not None


def is_conditional(run: runs.Run) -> bool:
  """Whether the model takes a label (a CVAE)."""
  return run.config.model.name in CONDITIONAL_MODELS


def check_class(run: runs.Run, label: int, flag: str) -> None:
  """Checks that `label` is a class of the run's labelled dataset."""
  require(has_labels(run), f"{flag} needs labels; {run.config.data.name} has none.")
  k = run.dataset.num_classes
  require(0 <= label < k, f"{flag}={label} is not a class of {run.config.data.name} (0..{k - 1}).")


def check_index(run: runs.Run, index: int, flag: str) -> None:
  """Checks that `index` is a position in the test split."""
  n = len(run.dataset.test_images)
  require(0 <= index < n, f"{flag}={index} is outside the test split (0..{n - 1}).")


def check_positive(value, flag: str) -> None:
  """Checks that a count or size is >= 1."""
  require(value >= 1, f"{flag}={value} must be >= 1.")


def _abstract_call(run: runs.Run, method: str | None):
  """Output shapes of one of the model's methods on a batch of 2, traced without compiling."""
  model, ds = run.model, run.dataset
  x = jnp.zeros((2, *ds.image_shape), jnp.float32)
  y = jnp.zeros((2,), jnp.int32) if ds.num_classes else None

  def call(key):
    if method == "encode":
      return model.init_with_output(key, x, y, method=model.encode)[0]
    return model.init_with_output(key, x, jax.random.split(key, 2), y)[0]

  return jax.eval_shape(call, jax.random.key(run.config.seed))


def has_gaussian_posterior(run: runs.Run) -> bool:
  """Whether `encode` returns `(mu, logvar)` (a VAE) rather than a point code."""
  return isinstance(_abstract_call(run, "encode"), tuple)


def forward_output_names(run: runs.Run) -> set[str]:
  """The names of the model's forward-pass outputs (e.g. whether it reports `log_q_z`)."""
  return set(_abstract_call(run, None))


# Keys, inputs and batched model calls.


def tool_key(run: runs.Run, seed: int | None, command: str) -> jax.Array:
  """The command's key: fold_in(key(seed or config.seed), a stable hash of the command)."""
  base = jax.random.key(run.config.seed if seed is None else seed)
  return jax.random.fold_in(base, zlib.crc32(command.encode()) & 0x7FFFFFFF)


def split_arrays(run: runs.Run, split: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(uint8 images, labels or None) of the 'train' or 'test' split."""
  ds = run.dataset
  if split == "test":
    return ds.test_images, ds.test_labels if has_labels(run) else None
  require(
    hasattr(ds, "train_images"),
    f"{run.config.data.name} has no stored training split (it is sampled); use the test split.",
  )
  return ds.train_images, ds.train_labels if ds.num_classes else None


def _binarization(run: runs.Run) -> tuple[str, float]:
  d = run.config.data
  return ("threshold" if d.binarize == "threshold" else "none"), float(d.binarize_threshold)


def inputs(run: runs.Run, images) -> jnp.ndarray:
  """uint8 images as the model sees them: [0, 1] floats, thresholded if the run thresholds.

  Dynamically binarized runs get the intensities (the mean of their Bernoulli inputs).
  """
  return preprocess(jnp.asarray(images), None, *_binarization(run))


def model_labels(run: runs.Run, labels) -> jnp.ndarray | None:
  """The labels to pass the model: the labels for a conditional model, None otherwise."""
  return jnp.asarray(labels, jnp.int32) if is_conditional(run) and labels is not None else None


def batched(fn: Callable, *arrays, batch_size: int = BATCH_SIZE):
  """Applies `fn` to equal-length arrays (None passes through) in fixed-size batches.

  Returns the outputs (a pytree of arrays) concatenated back to the arrays' length, as numpy.
  """
  n = len(arrays[0])
  size = min(batch_size, n)
  parts = []
  for start in range(0, n, size):
    idx = np.minimum(np.arange(start, start + size), n - 1)
    out = fn(*(None if a is None else np.asarray(a)[idx] for a in arrays))
    keep = min(size, n - start)
    parts.append(jax.tree.map(lambda v, keep=keep: np.asarray(v)[:keep], out))
  return jax.tree.map(lambda *vs: np.concatenate(vs), *parts)


# Jitted once per (model, static settings): the model is a hashable, unbound Flax module.
@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _encode(model, model_vars, images, y, binarize, threshold):
  code = model.apply(
    model_vars, preprocess(images, None, binarize, threshold), y, method=model.encode
  )
  return {"mu": code[0], "logvar": code[1]} if isinstance(code, tuple) else {"mu": code}


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _posterior_mean(model, model_vars, images, y, binarize, threshold):
  x = preprocess(images, None, binarize, threshold)
  return model_fns.posterior_mean(model, model_vars, x, y)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _decode_mean(model, model_vars, z, y, likelihood):
  return model_fns.decode_mean(model, model_vars, z, likelihood, y)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _reconstruct(model, model_vars, x, y, likelihood):
  return model_fns.reconstruct(model, model_vars, x, likelihood, y)


def encode(run: runs.Run, images, labels=None) -> dict[str, np.ndarray]:
  """Posterior `mu` (the code of an autoencoder) and, for a Gaussian posterior, `logvar`."""
  binarize = _binarization(run)
  return batched(
    lambda img, y: _encode(run.model, run.model_vars, img, y, *binarize),
    images,
    model_labels(run, labels),
  )


def posterior_means(run: runs.Run, images, labels=None) -> np.ndarray:
  """`model_fns.posterior_mean` of uint8 images, in batches."""
  binarize = _binarization(run)
  return batched(
    lambda img, y: _posterior_mean(run.model, run.model_vars, img, y, *binarize),
    images,
    model_labels(run, labels),
  )


def decode(run: runs.Run, z, labels=None) -> np.ndarray:
  """`model_fns.decode_mean` of latents, in batches: images in [0, 1]."""
  likelihood = run.config.model.likelihood
  return batched(
    lambda zz, y: _decode_mean(run.model, run.model_vars, zz, y, likelihood),
    z,
    model_labels(run, labels),
  )


def reconstruct(run: runs.Run, x, labels=None) -> np.ndarray:
  """`model_fns.reconstruct` of float inputs in [0, 1], in batches."""
  likelihood = run.config.model.likelihood
  return batched(
    lambda xx, y: _reconstruct(run.model, run.model_vars, xx, y, likelihood),
    x,
    model_labels(run, labels),
  )


# Output files.


def _to_uint8(image: np.ndarray) -> np.ndarray:
  return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255).astype(np.uint8)


class Outputs:
  """The files of one tool call: `<workdir>/tools/<stem><suffix>.<ext>`; nothing is overwritten.

  The default stem is the command's name, numbered (`sample-1`, `sample-2`, ...) when taken; an
  explicit `out` that is taken is an error. Images also go to TensorBoard (logdir
  `<workdir>/tools`, tag = file name, step = the checkpoint's step). Use as a context manager.
  """

  def __init__(self, run: runs.Run, default_stem: str, out: str | None):
    self.directory = os.path.join(run.workdir, TOOLS_DIR)
    self.step = run.step
    self.files: list[str] = []
    self._writer = None
    if out:
      stem = os.path.splitext(os.path.basename(out))[0]
      require(bool(stem), f"--out={out!r} is not a file name.")
      require(not self._taken(stem), f"{self.directory}/{stem}.* exists; choose another --out.")
    else:
      stem, i = default_stem, 0
      while self._taken(stem):
        i += 1
        stem = f"{default_stem}-{i}"
    self.stem = stem

  def _taken(self, stem: str) -> bool:
    if not os.path.isdir(self.directory):
      return False
    return any(f.startswith((stem + ".", stem + "_")) for f in os.listdir(self.directory))

  def __enter__(self) -> "Outputs":
    os.makedirs(self.directory, exist_ok=True)
    return self

  def __exit__(self, *exc) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()

  def path(self, ext: str, suffix: str = "") -> str:
    """A new file's path; it is recorded in `files`."""
    path = os.path.join(self.directory, f"{self.stem}{suffix}.{ext}")
    self.files.append(path)
    return path

  def _tensorboard(self, name: str, image: np.ndarray) -> None:
    if self._writer is None:
      self._writer = metric_writers.create_default_writer(self.directory, asynchronous=False)
    self._writer.write_images(self.step, {name: image[None]})

  def save_image(self, image: np.ndarray, suffix: str = "") -> str:
    """Writes an [H, W, C] image in [0, 1] as PNG (and to TensorBoard); returns the path."""
    pixels = _to_uint8(image)
    path = self.path("png", suffix)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
    self._tensorboard(self.stem + suffix, pixels)
    return path

  def save_figure(self, fig: Figure, suffix: str = "") -> str:
    """Writes a matplotlib figure as PNG (and to TensorBoard); returns the path."""
    path = self.path("png", suffix)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    self._tensorboard(self.stem + suffix, np.asarray(Image.open(path).convert("RGB")))
    return path

  def save_json(self, data: dict, suffix: str = "") -> str:
    """Writes a JSON file; returns the path."""
    path = self.path("json", suffix)
    with open(path, "w") as f:
      json.dump(data, f, indent=2)
    return path

  def save_npz(self, suffix: str = "", **arrays) -> str:
    """Writes arrays to an .npz file; returns the path."""
    path = self.path("npz", suffix)
    np.savez(path, **arrays)
    return path


def grid_columns(n: int) -> int:
  """Columns of a near-square grid of n images."""
  return int(np.ceil(np.sqrt(n)))
