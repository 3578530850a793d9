"""In-memory datasets whose training batch is a pure function of (seed, step).

A batch never depends on the device count: the host builds the global batch, and the trainer shards
it over the mesh's data axis. Resuming at step s therefore replays exactly the batches an
uninterrupted run would have seen.
"""

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from vae_jax.data.spec import DataSpec


class EpochSampler:
  """Shuffles the examples anew each epoch (from `[seed, epoch]`) and walks them in batches.

  The last partial batch of each epoch is dropped so that every step has the same shape.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if batch_size > num_examples:
      raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples.")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = num_examples // batch_size
    self._epoch = -1
    self._perm = np.empty(0, np.int64)

  def indices(self, step: int) -> np.ndarray:
    """Example indices of the global batch at `step`."""
    epoch, i = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
      self._epoch = epoch
    return self._perm[i * self.batch_size : (i + 1) * self.batch_size]


@dataclasses.dataclass
class ArrayDataset:
  """Train and test arrays held in host memory (uint8 images, optional int32 labels)."""

  train_images: np.ndarray
  train_labels: np.ndarray | None
  test_images: np.ndarray
  test_labels: np.ndarray | None
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.train_images.shape[1:])

  @property
  def spec(self) -> DataSpec:
    """The facts a model needs: image shape, classes, training examples."""
    return DataSpec(self.image_shape, self.num_classes, len(self.train_images))

  def without_train_labels(self, labels: Sequence[int]) -> "ArrayDataset":
    """A copy whose training split lacks the examples of `labels`; the test split is unchanged.

    Used to train a model that never sees some classes (e.g. to score them as anomalies).
    """
    if self.train_labels is None:
      raise ValueError("Excluding labels needs a labelled training split.")
    keep = ~np.isin(self.train_labels, np.asarray(labels, np.int64))
    return dataclasses.replace(
      self, train_images=self.train_images[keep], train_labels=self.train_labels[keep]
    )

  def train_stream(self, batch_size: int, seed: int) -> "TrainStream":
    """The deterministic training stream for a global batch size and seed."""
    return TrainStream(self, EpochSampler(len(self.train_images), batch_size, seed))

  def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The whole test split in padded, masked batches (see `eval_batches`)."""
    return eval_batches(self.test_images, self.test_labels, batch_size)


def eval_batches(
  images: np.ndarray, labels: np.ndarray | None, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """A split in batches of `batch_size`; the last is padded and masked.

  Each batch carries `index` (the example's position in the split, used to derive its keys) and
  `mask` (1 for real examples, 0 for padding).
  """
  n = len(images)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)
    yield {**_gather(images, labels, idx), "index": idx, "mask": mask}


def _gather(images: np.ndarray, labels: np.ndarray | None, idx: np.ndarray) -> dict:
  batch = {"image": images[idx]}
  if labels is not None:
    batch["label"] = labels[idx]
  return batch


@dataclasses.dataclass
class TrainStream:
  """`batch(step)` returns the global training batch for that step."""

  dataset: ArrayDataset
  sampler: EpochSampler

  @property
  def steps_per_epoch(self) -> int:
    """Full batches per pass over the training split."""
    return self.sampler.steps_per_epoch

  @property
  def batch_size(self) -> int:
    """Examples in a global batch."""
    return self.sampler.batch_size

  def batch(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Rows `rows` (default all) of the global batch for `step`: images (uint8), and labels."""
    d = self.dataset
    return _gather(d.train_images, d.train_labels, self.sampler.indices(step)[rows])

  def device_arrays(self) -> dict[str, np.ndarray]:
    """The training split, to keep on the device (uint8 images, int32 labels)."""
    d = self.dataset
    arrays = {"images": d.train_images}
    if d.train_labels is not None:
      arrays["labels"] = d.train_labels
    return arrays

  def step_inputs(self, step: int) -> dict[str, np.ndarray]:
    """The small per-step input `assemble` turns into the batch: the examples' indices."""
    return {"index": self.sampler.indices(step).astype(np.int32)}

  def assemble(self, arrays: dict, inputs: dict) -> dict:
    """The batch of `step_inputs`, gathered on the device: the same arrays as `batch`."""
    batch = {"image": arrays["images"][inputs["index"]]}
    if "labels" in arrays:
      batch["label"] = arrays["labels"][inputs["index"]]
    return batch
