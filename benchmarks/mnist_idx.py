"""Reads the original MNIST IDX files (the same bytes TFDS prepares from) into NumPy arrays.

`mnist_dataset` is what the benchmarks train on: TFDS's `mnist` (as a run loads it) where
`tensorflow_datasets` is installed, else the IDX files read here (same images, file order). The
fallback is for accelerator images that carry JAX but not TensorFlow.
"""

import gzip
import os

import numpy as np


def read_idx(path: str) -> np.ndarray:
  with gzip.open(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(manual_dir: str) -> dict[str, np.ndarray]:
  """The four arrays of the IDX files TFDS prepares `mnist` from (`tfds_images.MANUAL_FILES`)."""
  from vae_jax.data.tfds_images import MANUAL_FILES

  keys = ("train_images", "train_labels", "test_images", "test_labels")
  files = MANUAL_FILES["mnist"]
  return {k: read_idx(os.path.join(manual_dir, f)) for k, f in zip(keys, files, strict=True)}


def mnist_dataset(data_config):
  """The MNIST `ArrayDataset` of `data_config`: through TFDS where installed, else the IDX files."""
  from vae_jax.data import ArrayDataset, load_dataset

  try:
    import tensorflow_datasets  # noqa: F401
  except ImportError:
    data = load_mnist(data_config.manual_dir)
    print(
      f"tensorflow_datasets not installed: MNIST read from {data_config.manual_dir}'s IDX files"
    )
    return ArrayDataset(
      data["train_images"][..., None],
      data["train_labels"].astype(np.int32),
      data["test_images"][..., None],
      data["test_labels"].astype(np.int32),
      10,
    )
  return load_dataset(data_config)
