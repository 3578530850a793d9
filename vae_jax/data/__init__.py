"""Datasets by name: `load_dataset(config.data)`.

`dsprites_procedural` is rendered here (works anywhere); `dsprites` is DeepMind's original through
TFDS; any other name is a TFDS image dataset with train/test splits (mnist, fashion_mnist, cifar10,
celeb_a, ...), optionally centre-cropped and resized (`data.center_crop`, `data.resize`).
"""

import ml_collections

from vae_jax.data import tfds_images
from vae_jax.data.ground_truth import GroundTruthData, GroundTruthDataset
from vae_jax.data.pipeline import ArrayDataset, EpochSampler, TrainStream
from vae_jax.errors import DataError

__all__ = [
  "ArrayDataset",
  "DataError",
  "Dataset",
  "EpochSampler",
  "GroundTruthData",
  "GroundTruthDataset",
  "TrainStream",
  "load_dataset",
]
Dataset = ArrayDataset | GroundTruthDataset


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """Loads the dataset named by `config.name`."""
  if config.name == "dsprites_procedural":
    from vae_jax.data.dsprites_procedural import ProceduralDSprites

    return GroundTruthDataset(ProceduralDSprites(), num_test=config.num_eval_examples)
  if config.name == "dsprites":
    from vae_jax.data.dsprites_tfds import TFDSDSprites

    data = TFDSDSprites(config.data_dir, config.manual_dir)
    return GroundTruthDataset(data, num_test=config.num_eval_examples)
  builder = tfds_images.prepare(config.name, config.data_dir, config.manual_dir)
  crop, size = config.get("center_crop", 0), config.get("resize", 0)
  tfds_images.check_crop(config.name, tfds_images.image_shape(builder), crop)
  train_images, train_labels = tfds_images.load_split(builder, "train", crop, size)
  test_images, test_labels = tfds_images.load_split(builder, "test", crop, size)
  dataset = ArrayDataset(
    train_images, train_labels, test_images, test_labels, tfds_images.num_classes(builder)
  )
  exclude = tuple(config.get("exclude_labels", ()))
  if exclude and train_labels is not None:  # configuration.validate_for_data rejects the rest.
    dataset = dataset.without_train_labels(exclude)
  return dataset
