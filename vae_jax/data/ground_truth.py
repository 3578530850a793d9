"""Datasets with known generative factors: the interface the trainer and the metrics use.

A `GroundTruthData` names its factors and their sizes, converts between a flat index and factor
indices, samples factor indices, and renders images from them. `GroundTruthDataset` turns one into
a training stream (a batch depends only on (seed, step)) and a fixed evaluation split, with the same
methods as `ArrayDataset`, so the trainer does not care which kind it gets.
"""

import abc
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from vae_jax.data.pipeline import eval_batches
from vae_jax.data.spec import DataSpec

TRAIN_STREAM, TEST_STREAM = 0, 1


class GroundTruthData(abc.ABC):
  """Images rendered (or looked up) from a full grid of discrete factors of variation."""

  factor_names: tuple[str, ...]
  factor_sizes: tuple[int, ...]
  image_shape: tuple[int, int, int]

  @property
  def num_combinations(self) -> int:
    """Size of the factor grid."""
    return int(np.prod(self.factor_sizes))

  def index_to_factors(self, index: np.ndarray) -> np.ndarray:
    """Flat indices [n] to factor indices [n, num_factors] (last factor varies fastest)."""
    return np.stack(np.unravel_index(np.asarray(index), self.factor_sizes), axis=-1)

  def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
    """Factor indices [n, num_factors] to flat indices [n]."""
    return np.ravel_multi_index(tuple(np.asarray(factors).T), self.factor_sizes)

  def sample_factors(self, n: int, key: Sequence[int] | int) -> np.ndarray:
    """n factor-index vectors drawn uniformly from the grid; `key` is integer entropy."""
    rng = np.random.default_rng(key)
    return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=-1)

  @abc.abstractmethod
  def render(self, factors: np.ndarray) -> np.ndarray:
    """uint8 images [n, H, W, C] (0 or 255 for binary data) for factor indices [n, F]."""

  def device_tables(self) -> dict[str, np.ndarray] | None:
    """Arrays from which `render_on_device` draws images; None when only the host renders."""
    return None

  def render_on_device(self, tables: dict, factors):
    """`render` as a traced JAX function of `device_tables()` (when there are tables)."""
    raise NotImplementedError


@dataclasses.dataclass
class GroundTruthStream:
  """Training batches: `batch(step)` renders factors drawn from key (seed, TRAIN_STREAM, step)."""

  data: GroundTruthData
  batch_size: int
  seed: int

  @property
  def steps_per_epoch(self) -> int:
    """Steps that draw as many examples as the grid has combinations."""
    return max(1, self.data.num_combinations // self.batch_size)

  def factors(self, step: int) -> np.ndarray:
    """The factor indices [batch, num_factors] of the global batch at `step`."""
    return self.data.sample_factors(self.batch_size, (self.seed, TRAIN_STREAM, step))

  def batch(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Rows `rows` (default all) of the global batch for `step`: images only (no stored factors)."""
    return {"image": self.data.render(self.factors(step)[rows])}

  def device_arrays(self) -> dict[str, np.ndarray] | None:
    """What `assemble` renders from, to keep on the device; None when rendering is host-only."""
    return self.data.device_tables()

  def step_inputs(self, step: int) -> dict[str, np.ndarray]:
    """The small per-step input `assemble` turns into the batch: the drawn factors."""
    return {"factors": self.factors(step).astype(np.int32)}

  def assemble(self, arrays: dict, inputs: dict) -> dict:
    """The batch of `step_inputs`, rendered on the device: the same images as `batch`."""
    return {"image": self.data.render_on_device(arrays, inputs["factors"])}


@dataclasses.dataclass
class GroundTruthDataset:
  """A ground-truth dataset with a fixed test split of `num_test` sampled combinations.

  The test split is drawn from key (TEST_STREAM,) so that every run, whatever its seed, is evaluated
  on the same images.
  """

  data: GroundTruthData
  num_test: int = 10_000
  num_classes: int = 0
  test_labels: None = None

  def __post_init__(self):
    self.test_factors = self.data.sample_factors(self.num_test, (TEST_STREAM,))
    self.test_images = self.data.render(self.test_factors)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.data.image_shape)

  @property
  def spec(self) -> DataSpec:
    """The facts a model needs; the grid's size is the number of training examples."""
    return DataSpec(self.image_shape, self.num_classes, self.data.num_combinations)

  def train_stream(self, batch_size: int, seed: int) -> GroundTruthStream:
    """The deterministic training stream for a global batch size and seed."""
    return GroundTruthStream(self.data, batch_size, seed)

  def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The test split in padded, masked batches (see `pipeline.eval_batches`)."""
    return eval_batches(self.test_images, None, batch_size)
