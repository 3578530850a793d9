"""Image grids for TensorBoard and PNG files."""

import numpy as np


def image_grid(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
  """Tiles [N, H, W, C] images in [0, 1] into one [rows*(H+pad)+pad, ..., C] image."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  nrow = -(-n // ncol)
  grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, col = divmod(i, ncol)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top : top + h, left : left + w] = images[i]
  return grid
