"""Out-of-distribution inputs of `anomaly --ood_dataset` and the input-complexity correction.

`test_images` loads another dataset's test split for a run. Serrà et al., "Input complexity and
out-of-distribution detection with likelihood-based generative models" (ICLR 2020), score
S(x) = -log2 p(x) - L(x), with L(x) the length in bits of a lossless compression of x. Here L(x)
is the size of the image's PNG file (Pillow, zlib level 9), in bits, of exactly the 8-bit image
the model scores (the binary draw under dynamic binarization). The PNG signature and chunk
headers add the same 57 bytes to every image, a constant that leaves every ROC-AUC unchanged.
"""

import functools
import io
import json
import math

import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from vae_jax import data, runs
from vae_jax.tools.common import ToolError, require
from vae_jax.training import steps
from vae_jax.training.keys import index_keys

PNG_LEVEL = 9


def png_bits(image: np.ndarray) -> int:
  """Length in bits of the PNG file of one uint8 image [H, W, C] (C = 1 or 3)."""
  pixels = np.asarray(image, np.uint8)
  pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_LEVEL)
  return 8 * buffer.getbuffer().nbytes


def complexity_bits(images: np.ndarray) -> np.ndarray:
  """L(x) in bits [n] of uint8 images [n, H, W, C]: their PNG sizes."""
  return np.array([png_bits(image) for image in images], np.float64)


def corrected_score(nll_nats: np.ndarray, complexity: np.ndarray) -> np.ndarray:
  """Serrà et al.'s S(x) = -log2 p(x) - L(x), in bits, from the NLL in nats and L(x) in bits."""
  return np.asarray(nll_nats, np.float64) / math.log(2) - np.asarray(complexity, np.float64)


def scored_images(config: ml_collections.ConfigDict, images: np.ndarray, key) -> np.ndarray:
  """The uint8 images the likelihood sees when example i is scored with keys fold_in(key, i).

  The same preprocessing as training and evaluation (`steps.model_inputs`): the images themselves,
  or their thresholded or dynamically binarized versions (0 or 255).
  """
  if config.data.binarize == "none":
    return np.asarray(images, np.uint8)
  keys = index_keys(key, jnp.arange(len(images)))
  x, _, _ = steps.model_inputs({"image": jnp.asarray(images)}, keys, config.data)
  return np.asarray(np.round(np.asarray(x) * 255.0), np.uint8)


def _data_config(run: runs.Run, name: str, manual_dir: str | None) -> ml_collections.ConfigDict:
  """The run's data settings (data_dir, crops, sizes) for dataset `name`, all labels kept."""
  config = ml_collections.ConfigDict(run.config.data.to_dict())
  config.name = name
  config.manual_dir = manual_dir
  if "exclude_labels" in config:
    config.exclude_labels = ()
  return config


@functools.lru_cache(maxsize=4)
def _load_test_images(config_json: str) -> np.ndarray:
  dataset = data.load_dataset(ml_collections.ConfigDict(json.loads(config_json)))
  return dataset.test_images


def test_images(run: runs.Run, name: str, manual_dir: str | None) -> np.ndarray:
  """The uint8 test images [n, H, W, C] of dataset `name`, which must have the run's image shape.

  Loaded once per (dataset, settings) in a process, so the CLI's check and the tool share them.

  Raises:
    ToolError: the dataset is unknown, its files are missing, or its images have another shape.
  """
  require(name != run.config.data.name, f"--ood_dataset={name} is the run's own dataset.")
  config = _data_config(run, name, manual_dir)
  try:
    images = _load_test_images(json.dumps(config.to_dict(), sort_keys=True))
  except data.DataError as e:
    raise ToolError(f"--ood_dataset={name}: {e}") from e
  shape, expected = tuple(images.shape[1:]), tuple(run.dataset.test_images.shape[1:])
  require(
    shape == expected,
    f"--ood_dataset={name} has {shape[0]}x{shape[1]}x{shape[2]} images; the run's "
    f"{run.config.data.name} has {expected[0]}x{expected[1]}x{expected[2]}. Choose a dataset "
    "of the same image shape.",
  )
  return images
