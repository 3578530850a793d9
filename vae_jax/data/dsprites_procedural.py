"""Procedural dSprites: DeepMind's dSprites factor grid, rendered here, so it works offline.

Factors (exactly dSprites' grid, 3 * 6 * 40 * 32 * 32 = 737,280 combinations):
  shape        3   square, ellipse, heart
  scale        6   linspace(0.5, 1, 6)
  orientation 40   linspace(0, 2*pi, 40) (like dSprites, the first and last values coincide)
  posX        32   linspace(0, 1, 32)
  posY        32   linspace(0, 1, 32)

Geometry. Images are 64x64, white sprite (255) on black (0). Each sprite is drawn in a 32x32 box:
its size is set by a half-size h = 10.5 px * scale (square: side 2h; ellipse: semi-axes h and h/2;
heart: the curve (x^2 + y^2 - 1)^3 = x^2 y^3 scaled by h / 1.14, centred on its bounding box), it
is rotated by `orientation` (counter-clockwise) about the box centre, and a pixel is white when at
least half of its 4x4 sub-samples fall inside the shape. The farthest point of any sprite lies
14.9 px from the box centre, so no sprite touches the box edge. The box's top-left corner is at
(row, col) = (posY index, posX index), so sprite centres run from pixel 16 to 47 in 1-px steps and
every sprite lies inside the frame. Distinct positions and scales give distinct images; orientations
differ except where a shape is symmetric (square: 90 degrees, ellipse: 180 degrees), as in dSprites.

Scores on this dataset are NOT comparable with published dSprites numbers: the sprites, their
sizes and the range of positions differ from DeepMind's rendering.
"""

import functools

import numpy as np

from vae_jax.data.ground_truth import GroundTruthData

SHAPES = ("square", "ellipse", "heart")
_CANVAS, _BOX, _SUB = 64, 32, 4
_HALF_SIZE = 10.5
_HEART_SCALE, _HEART_CENTER_Y = 1.14, 0.118  # heart's half-width and bounding-box centre


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Membership in the unit shape; u to the right, v upwards, both in units of the half-size."""
  if shape == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0
  if shape == "ellipse":
    return u**2 + (2.0 * v) ** 2 <= 1.0
  x, y = u * _HEART_SCALE, v * _HEART_SCALE + _HEART_CENTER_Y
  return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


@functools.cache
def sprite_masks() -> np.ndarray:
  """All 3 x 6 x 40 sprites as 32x32 uint8 masks in {0, 255}, computed once per process."""
  offsets = (np.arange(_BOX * _SUB) + 0.5) / _SUB - _BOX / 2  # sub-sample centres, box-centred
  col, row = np.meshgrid(offsets, offsets)
  x, y = col, -row  # y upwards
  scales = np.linspace(0.5, 1.0, 6)[:, None, None, None]
  angles = np.linspace(0.0, 2 * np.pi, 40)[None, :, None, None]
  cos, sin = np.cos(angles), np.sin(angles)
  h = _HALF_SIZE * scales
  u = (cos * x + sin * y) / h  # rotate the sampling grid by -angle = rotate the sprite by +angle
  v = (-sin * x + cos * y) / h
  masks = []
  for shape in SHAPES:
    inside = _inside(shape, u, v).reshape(6, 40, _BOX, _SUB, _BOX, _SUB)
    masks.append(inside.mean(axis=(3, 5)) >= 0.5)
  return (np.stack(masks) * 255).astype(np.uint8)


class ProceduralDSprites(GroundTruthData):
  """dSprites' factor grid rendered by `sprite_masks` pasted at the position factors."""

  factor_names = ("shape", "scale", "orientation", "posX", "posY")
  factor_sizes = (3, 6, 40, 32, 32)
  image_shape = (_CANVAS, _CANVAS, 1)

  def device_tables(self) -> dict[str, np.ndarray]:
    """The 3 x 6 x 40 sprite masks (720 KB): the device renders from them."""
    return {"masks": sprite_masks()}

  def render_on_device(self, tables: dict, factors):
    """`render` on the device: each mask pasted into a zero canvas at (posY, posX)."""
    import jax
    import jax.numpy as jnp

    def one(f):
      mask = tables["masks"][f[0], f[1], f[2]]
      canvas = jnp.zeros((_CANVAS, _CANVAS), jnp.uint8)
      return jax.lax.dynamic_update_slice(canvas, mask, (f[4], f[3]))

    return jax.vmap(one)(factors)[..., None]

  def render(self, factors: np.ndarray) -> np.ndarray:
    """uint8 images [n, 64, 64, 1] in {0, 255}; vectorized over the batch."""
    f = np.asarray(factors)
    n = len(f)
    masks = sprite_masks()[f[:, 0], f[:, 1], f[:, 2]]
    span = np.arange(_BOX)
    rows = (f[:, 4, None] + span)[:, :, None]
    cols = (f[:, 3, None] + span)[:, None, :]
    images = np.zeros((n, _CANVAS, _CANVAS), np.uint8)
    images[np.arange(n)[:, None, None], rows, cols] = masks
    return images[..., None]
