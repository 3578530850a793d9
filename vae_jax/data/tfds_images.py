"""Loads a TFDS image-classification dataset into memory, offline when `manual_dir` is given.

TFDS reads and decodes its records through tf.data; the decoded uint8 arrays are then held in host
memory so that every training batch is a pure function of (seed, step).
"""

import os
import socket
import tempfile

import numpy as np

from vae_jax.errors import DataError

# Raw files TFDS expects in `manual_dir` for the datasets we know (it looks them up by URL name).
_IDX_FILES = (
  "train-images-idx3-ubyte.gz",
  "train-labels-idx1-ubyte.gz",
  "t10k-images-idx3-ubyte.gz",
  "t10k-labels-idx1-ubyte.gz",
)
MANUAL_FILES = {
  "mnist": _IDX_FILES,
  "fashion_mnist": _IDX_FILES,
  "dsprites": ("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5",),
  "cifar10": ("cifar-10-binary.tar.gz",),
  "celeb_a": (
    "img_align_celeba.zip",
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "identity_CelebA.txt",
  ),
}


def _network_available(host: str = "storage.googleapis.com", timeout: float = 2.0) -> bool:
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _missing_data_message(name: str, manual_dir: str | None) -> str:
  files = MANUAL_FILES.get(name)
  what = (
    ", ".join(files)
    if files
    else f"the raw files TFDS downloads for '{name}' (see its TFDS catalog page)"
  )
  where = manual_dir or "<dir>"
  return (
    f"Dataset '{name}' is not prepared and cannot be downloaded (no network). Put {what} "
    f"in {where} and pass --config.data.manual_dir={where}."
  )


def _check_manual_dir(name: str, manual_dir: str) -> None:
  if not os.path.isdir(manual_dir):
    raise DataError(_missing_data_message(name, manual_dir) + f" ({manual_dir} does not exist.)")
  missing = [f for f in MANUAL_FILES.get(name, ()) if not os.path.exists(f"{manual_dir}/{f}")]
  if missing:
    raise DataError(
      f"data.manual_dir={manual_dir} lacks {', '.join(missing)} needed to prepare '{name}'. "
      "Copy the original files there (same names as the TFDS download)."
    )


def _builder(name: str, data_dir: str | None):
  import tensorflow_datasets as tfds

  try:
    return tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises DatasetNotFoundError and friends.
    raise DataError(f"Unknown TFDS dataset '{name}': {e}".splitlines()[0]) from e


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None):
  """Returns a prepared TFDS builder, preparing it from `manual_dir` (or the network) if needed.

  Raises:
    DataError: unknown dataset, or data absent and not obtainable; the message names the files.
  """
  import tensorflow_datasets as tfds

  builder = _builder(name, data_dir)
  if builder.is_prepared():
    return builder
  if manual_dir:
    _check_manual_dir(name, manual_dir)
  elif not _network_available():
    raise DataError(_missing_data_message(name, manual_dir))
  # A fresh extraction folder: TFDS names the extraction of a manual file after the file alone, so
  # in a shared one Fashion-MNIST would silently reuse MNIST's files of the same names.
  with tempfile.TemporaryDirectory(prefix=f"tfds_extract_{name}_") as extract_dir:
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, extract_dir=extract_dir)
    try:
      builder.download_and_prepare(download_config=config)
    except Exception as e:
      raise DataError(f"Preparing '{name}' failed: {str(e).splitlines()[0]}") from e
  return builder


def image_shape(builder) -> tuple[int | None, ...]:
  """The dataset's stored (H, W, C) (None where the images vary)."""
  return tuple(builder.info.features["image"].shape)


def check_crop(name: str, shape, center_crop: int) -> None:
  """Raises `ConfigError` when a centre crop of `center_crop` does not fit `name`'s images."""
  from vae_jax.errors import ConfigError

  h, w = shape[:2]
  if center_crop and h is not None and w is not None and center_crop > min(h, w):
    raise ConfigError(
      f"data.center_crop={center_crop} exceeds the {h}x{w} images of '{name}'; use <= {min(h, w)}."
    )


def _image_and_label(center_crop: int, resize: int):
  """A tf.data map: centred square crop, antialiased bilinear resize; keeps image and label."""
  import tensorflow as tf

  def fn(example):
    image = example["image"]
    if center_crop:
      top = (tf.shape(image)[0] - center_crop) // 2
      left = (tf.shape(image)[1] - center_crop) // 2
      image = image[top : top + center_crop, left : left + center_crop]
    if resize:
      image = tf.image.resize(image, (resize, resize), method="bilinear", antialias=True)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    out = {"image": image}
    if "label" in example:
      out["label"] = example["label"]
    return out

  return fn


def load_split(
  builder, split: str, center_crop: int = 0, resize: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
  """Decodes a whole split to (uint8 images [N, H, W, C], int32 labels [N] or None).

  `center_crop` (a centred square of that side) and `resize` (to that side) run in tf.data, so
  only the final images are held in memory (CelebA's 218x178 originals would take 19 GB).
  """
  import tensorflow_datasets as tfds

  ds = builder.as_dataset(split=split).map(_image_and_label(center_crop, resize))
  chunks = list(tfds.as_numpy(ds.batch(8192)))
  data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  images = np.asarray(data["image"], np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  labels = data.get("label")
  return images, None if labels is None else np.asarray(labels, np.int32)


def num_classes(builder) -> int:
  """Number of label classes, 0 when the dataset has no `label` feature."""
  features = builder.info.features
  label = features["label"] if "label" in features else None  # noqa: SIM401 (no .get)
  return int(getattr(label, "num_classes", 0) or 0)
