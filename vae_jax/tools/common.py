"""What every tool shares: opening a run, checks, batched model calls, keys and output files.

A tool is a pair `check_<command>(run, options)` (reads only the config, dataset and model, so the
CLI runs it before anything is restored or compiled) and `run_<command>(run, **options) -> dict`.
"""

import dataclasses
import os
import zlib
from collections.abc import Callable

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from vae_jax import runs
from vae_jax.data import Dataset
from vae_jax.errors import UserError, writing
from vae_jax.evaluation.inference import Inference
from vae_jax.training import mesh as meshes

matplotlib.use("Agg")

TOOLS_DIR = "tools"


class ToolError(UserError, ValueError):
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


def open_run(
  workdir: str,
  checkpoint: str = "latest",
  *,
  overrides: dict | None = None,
  dataset: Dataset | None = None,
  restore: bool = True,
) -> runs.Run:
  """`runs.open_run` with the variables on one device (the tools' inputs are small)."""
  run = runs.open_run(workdir, checkpoint, overrides=overrides, dataset=dataset, restore=False)
  return restore_run(run) if restore else run


def restore_run(run: runs.Run, averaged: bool = True) -> runs.Run:
  """Restores the variables of an `open_run(..., restore=False)` result onto one device.

  `averaged` as in `runs.restore_run`: False gives an averaged run's last parameters.
  """
  return runs.restore_run(run, meshes.make_mesh(jax.local_devices()[:1]), averaged=averaged)


def inference(run: runs.Run) -> Inference:
  """The run's jitted model calls (see `evaluation.inference`)."""
  return Inference(run.model, run.model_vars, run.config, meshes.make_mesh(jax.local_devices()[:1]))


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
  return run.model.capabilities.conditional


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


# Keys and inputs.


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

  def _write(self, path: str, write: Callable[[], None]) -> None:
    """Runs `write` on process 0 (other processes write nothing).

    A file-system failure removes the partial file and raises `WriteError`.
    """
    if not meshes.is_primary():
      return
    with writing(path, "Earlier outputs in this folder are unchanged."):
      try:
        write()
      except Exception:
        if os.path.exists(path):
          os.remove(path)
        raise

  def _tensorboard(self, name: str, image: np.ndarray) -> None:
    if self._writer is None:
      self._writer = runs.metric_writer(self.directory)
    self._writer.write_images(self.step, {name: image[None]})

  def save_image(self, image: np.ndarray, suffix: str = "") -> str:
    """Writes an [H, W, C] image in [0, 1] as PNG (and to TensorBoard); returns the path."""
    pixels = _to_uint8(image)
    path = self.path("png", suffix)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    self._write(path, lambda: image.save(path))
    self._tensorboard(self.stem + suffix, pixels)
    return path

  def save_figure(self, fig: Figure, suffix: str = "") -> str:
    """Writes a matplotlib figure as PNG (and to TensorBoard); returns the path."""
    path = self.path("png", suffix)
    self._write(path, lambda: fig.savefig(path, dpi=100, bbox_inches="tight"))
    if meshes.is_primary():
      self._tensorboard(self.stem + suffix, np.asarray(Image.open(path).convert("RGB")))
    return path

  def save_json(self, data: dict, suffix: str = "") -> str:
    """Writes a JSON file; returns the path."""
    path = self.path("json", suffix)
    runs.write_json(path, data)
    return path

  def save_npz(self, suffix: str = "", **arrays) -> str:
    """Writes arrays to an .npz file; returns the path."""
    path = self.path("npz", suffix)
    self._write(path, lambda: np.savez(path, **arrays))
    return path


def grid_columns(n: int) -> int:
  """Columns of a near-square grid of n images."""
  return int(np.ceil(np.sqrt(n)))
