"""A trained feature network in its own directory: `feature_net.json` beside Orbax `params/`.

`train_and_save(TrainOptions(...))` loads the dataset, trains a `FeatureNet` on its training split
(labels; for a ground-truth dataset such as procedural dSprites, each factor of freshly sampled
images as a class), measures its test accuracy and writes both; `load(workdir)` gives it back as a
`FeatureNetwork` whose `features` the metrics use, and `check(workdir, data_name, image_shape)`
says, before anything is compiled, whether it can score a run.
"""

import dataclasses
import json
import os
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import runs
from vae_jax.data import GroundTruthDataset, load_dataset
from vae_jax.errors import ConfigError
from vae_jax.evaluation.features import network

INFO, PARAMS = "feature_net.json", "params"
TRAIN_COMMAND = "python -m vae_jax.evaluation.features train --dataset=NAME --workdir=DIR"
# numpy entropy tag of the training factors sampled for a ground-truth dataset.
FEATURE_STREAM = 0xFEA7
# Conv stacks: up to 32x32 (MNIST), as experiments/vqvae_prior/classify.py; larger (dSprites'
# 64x64) pools once more.
SMALL_CONV, LARGE_CONV = (32, 64), (32, 64, 64)


@dataclasses.dataclass
class TrainOptions:
  """What `train_and_save` trains (recorded in feature_net.json).

  Attributes:
    dataset: data.name of the runs it will score (mnist, fashion_mnist, dsprites_procedural, ...).
    workdir: where the network goes.
    manual_dir: raw data files for TFDS (offline).
    data_dir: TFDS data_dir.
    epochs: passes over the training data.
    seed: the network's keys (init, shuffling) and a ground-truth dataset's training factors.
    num_train: training images sampled for a ground-truth dataset (labelled datasets use all).
    batch_size: examples per Adam step.
  """

  dataset: str
  workdir: str
  manual_dir: str | None = None
  data_dir: str | None = None
  epochs: int = 3
  seed: int = 0
  num_train: int = 100_000
  batch_size: int = 128

  def settings(self) -> dict:
    """The fields that change the network (a rerun with others is refused)."""
    return {
      "dataset": self.dataset,
      "epochs": self.epochs,
      "seed": self.seed,
      "num_train": self.num_train,
      "batch_size": self.batch_size,
    }


@dataclasses.dataclass
class FeatureNetwork:
  """A restored feature network and its record (`info`: dataset, test accuracy, ...)."""

  net: network.FeatureNet
  params: dict
  info: dict

  @property
  def test_accuracy(self) -> float:
    """Test accuracy, averaged over the heads."""
    return float(self.info["test_accuracy"])

  def features(self, x: np.ndarray) -> np.ndarray:
    """Penultimate activations [n, d] (float64) of images [n, H, W, C] in [0, 1]."""
    return network.features(self.net, self.params, x).astype(np.float64)


def _data_config(options: TrainOptions) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      "name": options.dataset,
      "data_dir": options.data_dir,
      "manual_dir": options.manual_dir,
      "num_eval_examples": 10_000,
      "exclude_labels": (),
    }
  )


def training_arrays(options: TrainOptions) -> dict:
  """Train/test images and per-head targets of the dataset, with the heads' sizes and names.

  Raises:
    DataError: the dataset is unknown or its files are missing.
    ConfigError: a dataset without labels or ground-truth factors.
  """
  dataset = load_dataset(_data_config(options))
  if isinstance(dataset, GroundTruthDataset):
    data = dataset.data
    factors = data.sample_factors(options.num_train, (options.seed, FEATURE_STREAM))
    return {
      "train": (data.render(factors), factors.astype(np.int32)),
      "test": (dataset.test_images, dataset.test_factors.astype(np.int32)),
      "heads": tuple(int(s) for s in data.factor_sizes),
      "head_names": tuple(data.factor_names),
    }
  if dataset.train_labels is None:
    raise ConfigError(f"--dataset={options.dataset} has no labels to train a classifier on.")
  return {
    "train": (dataset.train_images, dataset.train_labels[:, None].astype(np.int32)),
    "test": (dataset.test_images, dataset.test_labels[:, None].astype(np.int32)),
    "heads": (int(dataset.num_classes),),
    "head_names": ("label",),
  }


def make_net(heads: tuple[int, ...], image_shape: tuple[int, ...]) -> network.FeatureNet:
  """The network for images of `image_shape` (see `SMALL_CONV`)."""
  conv = SMALL_CONV if max(image_shape[:2]) <= 32 else LARGE_CONV
  return network.FeatureNet(heads=tuple(heads), conv_features=conv)


def train_and_save(options: TrainOptions, log=print) -> dict:
  """Trains, tests and saves a feature network; returns its record (feature_net.json).

  A workdir that already holds a network trained with the same settings is reused as it is.

  Raises:
    ConfigError: bad options, or the workdir holds a network trained with other settings.
  """
  if options.epochs < 1 or options.num_train < 2 or options.batch_size < 1:
    raise ConfigError("epochs and batch_size must be >= 1 and num_train >= 2.")
  existing = _read_info(options.workdir)
  if existing is not None:
    if existing["settings"] != options.settings():
      raise ConfigError(
        f"{options.workdir} holds a feature network trained with {existing['settings']}; "
        "use another --workdir or the same settings."
      )
    return existing
  runs.check_workdir(options.workdir)
  arrays = training_arrays(options)
  train_images, train_targets = arrays["train"]
  net = make_net(arrays["heads"], train_images.shape[1:])
  start = time.time()
  rng = jax.random.key(options.seed)
  params = network.train(
    net, train_images, train_targets, options.epochs, rng, options.batch_size, log=log
  )
  per_head = network.accuracies(net, params, *arrays["test"])
  info = {
    "dataset": options.dataset,
    "image_shape": list(train_images.shape[1:]),
    "heads": list(net.heads),
    "head_names": list(arrays["head_names"]),
    "conv_features": list(net.conv_features),
    "feature_dim": net.dense,
    "test_accuracy": float(per_head.mean()),
    "test_accuracy_per_head": dict(zip(arrays["head_names"], map(float, per_head), strict=True)),
    "num_train_images": len(train_images),
    "num_test_images": len(arrays["test"][0]),
    "train_seconds": time.time() - start,
    "settings": options.settings(),
  }
  save(options.workdir, params, info)
  return info


def save(workdir: str, params: dict, info: dict) -> None:
  """Writes params/ (Orbax) and then feature_net.json (its presence marks a complete save)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.abspath(os.path.join(workdir, PARAMS))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, jax.device_get(params), force=True)
  checkpointer.wait_until_finished()
  runs.write_json(os.path.join(workdir, INFO), info)


def _read_info(workdir: str) -> dict | None:
  path = os.path.join(workdir, INFO)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_exists(workdir: str, data_name: str = "NAME") -> dict:
  """The record of the feature network in `workdir`.

  Raises:
    ConfigError: there is none (the message says how to train one).
  """
  info = _read_info(workdir)
  if info is None:
    train = TRAIN_COMMAND.replace("NAME", data_name).replace("DIR", workdir)
    raise ConfigError(
      f"--features_workdir={workdir} holds no feature network ({INFO} is missing); "
      f"train one with `{train}`."
    )
  return info


def check(workdir: str | None, data_name: str, image_shape: tuple[int, ...]) -> dict:
  """The record of the feature network in `workdir`, if it can score runs on `data_name`.

  Raises:
    ConfigError: no workdir given, no network there, or one trained on other data.
  """
  train = TRAIN_COMMAND.replace("NAME", data_name)
  if not workdir:
    raise ConfigError(
      f"fid and precision_recall need --features_workdir; train one with `{train}`."
    )
  info = check_exists(workdir, data_name)
  if info["dataset"] != data_name or tuple(info["image_shape"]) != tuple(image_shape):
    raise ConfigError(
      f"--features_workdir={workdir} was trained on {info['dataset']!r} "
      f"({'x'.join(map(str, info['image_shape']))} images), not on this run's "
      f"data.name={data_name!r}; give one trained on {data_name!r} (`{train}`)."
    )
  return info


def load(workdir: str) -> FeatureNetwork:
  """Restores the network saved in `workdir` (checked with `check` first)."""
  info = _read_info(workdir)
  net = network.FeatureNet(
    heads=tuple(info["heads"]),
    conv_features=tuple(info["conv_features"]),
    dense=info["feature_dim"],
  )
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shapes = jax.eval_shape(
    lambda: network.init(net, jax.random.key(info["settings"]["seed"]), tuple(info["image_shape"]))
  )
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here), shapes)
  path = os.path.abspath(os.path.join(workdir, PARAMS))
  params = ocp.StandardCheckpointer().restore(path, target)
  return FeatureNetwork(net, params, info)
