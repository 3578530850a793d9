"""Datasets by name: `load_dataset(config.data)` returns an in-memory `ArrayDataset`."""

import ml_collections

from vae_jax.data import tfds_images
from vae_jax.data.pipeline import ArrayDataset, EpochSampler, TrainStream
from vae_jax.data.tfds_images import DataError

__all__ = ["ArrayDataset", "DataError", "EpochSampler", "TrainStream", "load_dataset"]


def load_dataset(config: ml_collections.ConfigDict) -> ArrayDataset:
  """Loads the dataset named by `config.name` (any TFDS image dataset with train/test splits)."""
  builder = tfds_images.prepare(config.name, config.data_dir, config.manual_dir)
  train_images, train_labels = tfds_images.load_split(builder, "train")
  test_images, test_labels = tfds_images.load_split(builder, "test")
  return ArrayDataset(
    train_images, train_labels, test_images, test_labels, tfds_images.num_classes(builder)
  )
