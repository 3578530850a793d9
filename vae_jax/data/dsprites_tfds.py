"""DeepMind's original dSprites through TFDS, behind the `GroundTruthData` interface.

TFDS's `dsprites` needs `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5` (from
github.com/deepmind/dsprites-dataset) in `data.manual_dir` when there is no network. All 737,280
images are held in memory bit-packed (377 MB) in grid order, so `render` is a lookup.
"""

import numpy as np

from vae_jax.data import tfds_images
from vae_jax.data.ground_truth import GroundTruthData
from vae_jax.errors import DataError

_LABELS = (
  "label_shape",
  "label_scale",
  "label_orientation",
  "label_x_position",
  "label_y_position",
)


class TFDSDSprites(GroundTruthData):
  """The original dSprites; factor indices are TFDS's labels.

  Args:
    data_dir: TFDS data directory (None: TFDS default).
    manual_dir: folder holding the .hdf5 file, for preparing without network.
    require_complete: raise unless every grid combination is present.
  """

  factor_names = ("shape", "scale", "orientation", "posX", "posY")
  factor_sizes = (3, 6, 40, 32, 32)
  image_shape = (64, 64, 1)

  def __init__(
    self, data_dir: str | None = None, manual_dir: str | None = None, require_complete=True
  ):
    import tensorflow_datasets as tfds

    builder = tfds_images.prepare("dsprites", data_dir, manual_dir)
    self._bits = np.zeros((self.num_combinations, 64, 8), np.uint8)
    self._present = np.zeros(self.num_combinations, bool)
    for chunk in tfds.as_numpy(builder.as_dataset(split="train").batch(16384)):
      index = self.factors_to_index(np.stack([chunk[k] for k in _LABELS], axis=-1))
      self._bits[index] = np.packbits(chunk["image"][..., 0] > 0, axis=-1)
      self._present[index] = True
    if require_complete and not self._present.all():
      raise DataError(
        f"TFDS dsprites holds {self._present.sum()} of {self.num_combinations} factor "
        "combinations; re-prepare it from the original .hdf5 file."
      )

  def render(self, factors: np.ndarray) -> np.ndarray:
    """The stored uint8 images [n, 64, 64, 1] in {0, 255} for factor indices [n, 5]."""
    index = self.factors_to_index(factors)
    if not self._present[index].all():
      raise KeyError("Some requested factor combinations are not in the loaded dsprites data.")
    return (np.unpackbits(self._bits[index], axis=-1) * 255)[..., None]
