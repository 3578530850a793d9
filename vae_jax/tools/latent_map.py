"""The latent space at a glance: posterior means scattered in 2-D, and a decoded grid when d = 2."""

import dataclasses

import numpy as np
from matplotlib.figure import Figure

from vae_jax import runs
from vae_jax.evaluation.images import image_grid
from vae_jax.tools import common
from vae_jax.tools.common import require

GRID_STEPS = 20
GRID_LIMIT = 3.0


@dataclasses.dataclass
class LatentMapOptions(common.Options):
  """num: test examples scattered; label: the class a conditional model decodes the grid with."""

  num: int = 2000
  label: int | None = None


def check_latent_map(run: runs.Run, o: LatentMapOptions) -> None:
  """Checks latent-map's options against the run."""
  common.check_positive(o.num, "--num")
  if o.label is not None:
    require(
      common.is_conditional(run),
      f"--label needs a class-conditional model; model.name={run.config.model.name!r} is not one.",
    )
    common.check_class(run, o.label, "--label")


LATENT_MAP = common.Command("latent-map", LatentMapOptions, check_latent_map, "latent_map")


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projects points onto their first two principal axes (SVD of the centred points).

  Returns:
    ([n, 2] coordinates, [2] share of the variance each axis explains). Fewer than two dimensions
    are padded with zeros.
  """
  x = np.asarray(points, np.float64)
  x = x - x.mean(axis=0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  coords = x @ vt[:2].T
  explained = np.square(s[:2]) / max(np.square(s).sum(), 1e-12)
  pad = 2 - coords.shape[1]
  return np.pad(coords, ((0, 0), (0, pad))), np.pad(explained, (0, pad))


def _colours(run: runs.Run, n: int) -> tuple[np.ndarray | None, str]:
  """Per-point colour values and their name: labels, else the first varying ground-truth factor."""
  ds = run.dataset
  if common.has_labels(run):
    return ds.test_labels[:n], "label"
  factors = getattr(ds, "test_factors", None)
  if factors is not None:
    for j, size in enumerate(ds.data.factor_sizes):
      if size > 1:
        return factors[:n, j], ds.data.factor_names[j]
  return None, ""


def decoded_grid(run: runs.Run, label: int | None) -> np.ndarray:
  """Decodes a GRID_STEPS^2 grid over [-3, 3]^2 (z_1 down the rows, top = +3; z_0 across)."""
  values = np.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_STEPS, dtype=np.float32)
  z0, z1 = np.meshgrid(values, values[::-1])
  z = np.stack([z0.ravel(), z1.ravel()], axis=1)
  labels = None if label is None else np.full(len(z), label)
  return image_grid(common.inference(run).decode(z, labels), ncol=GRID_STEPS)


def run_latent_map(run: runs.Run, **options) -> dict:
  """Scatter of the first `num` test examples' posterior means (PCA when latent_dim > 2).

  With latent_dim == 2 it also decodes a grid over [-3, 3]^2 (suffix `_grid`); a conditional model
  decodes it with --label (default class 0).
  """
  o = LATENT_MAP.parse(run, options)
  images, labels = common.split_arrays(run, "test")
  n = min(o.num, len(images))
  mu = common.inference(run).posterior_means(images[:n], None if labels is None else labels[:n])
  d = mu.shape[-1]
  notes = []
  if d == 2:
    coords, axes = mu, ("z_0", "z_1")
  else:
    coords, explained = pca_2d(mu)
    axes = tuple(f"PC{i + 1} ({100 * e:.0f}% var.)" for i, e in enumerate(explained))
    notes.append(f"latent_dim={d}: scatter of the first two principal components; no decoded grid.")
  colours, colour_name = _colours(run, n)
  fig = Figure(figsize=(6, 5))
  ax = fig.add_subplot()
  if colours is None:
    ax.scatter(coords[:, 0], coords[:, 1], s=4, alpha=0.6)
  else:
    cmap = "tab10" if np.max(colours) < 10 else "viridis"
    points = ax.scatter(coords[:, 0], coords[:, 1], c=colours, cmap=cmap, s=4, alpha=0.7)
    fig.colorbar(points, ax=ax, label=colour_name)
  ax.set_xlabel(axes[0])
  ax.set_ylabel(axes[1])
  ax.set_title(f"posterior means of {n} test examples (step {run.step})")
  with LATENT_MAP.outputs(run, o) as out:
    out.save_figure(fig)
    grid = None
    if d == 2:
      label = (o.label or 0) if common.is_conditional(run) else None
      grid = decoded_grid(run, label)
      out.save_image(grid, suffix="_grid")
  return {"files": out.files, "coords": coords, "grid": grid, "notes": notes}
