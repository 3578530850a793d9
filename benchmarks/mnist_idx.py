"""Reads the original MNIST IDX files (the same bytes TFDS prepares from) into NumPy arrays."""

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
  names = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
  }
  return {k: read_idx(os.path.join(manual_dir, v)) for k, v in names.items()}
