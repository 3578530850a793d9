import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vae_jax.data import DataError, GroundTruthDataset, tfds_images
from vae_jax.data.dsprites_procedural import ProceduralDSprites, sprite_masks


@pytest.fixture(scope="module")
def sprites():
  return ProceduralDSprites()


def test_factor_grid_is_dsprites(sprites):
  assert sprites.factor_names == ("shape", "scale", "orientation", "posX", "posY")
  assert sprites.factor_sizes == (3, 6, 40, 32, 32)
  assert sprites.num_combinations == 737_280


def test_index_factor_round_trip(sprites):
  index = np.array([0, 1, 32, 1024, 737_279, 123_456])
  factors = sprites.index_to_factors(index)
  np.testing.assert_array_equal(factors[0], [0, 0, 0, 0, 0])
  np.testing.assert_array_equal(factors[1], [0, 0, 0, 0, 1])  # posY varies fastest
  np.testing.assert_array_equal(factors[2], [0, 0, 0, 1, 0])
  np.testing.assert_array_equal(factors[4], [2, 5, 39, 31, 31])
  np.testing.assert_array_equal(sprites.factors_to_index(factors), index)
  random = sprites.sample_factors(1000, (0,))
  np.testing.assert_array_equal(sprites.index_to_factors(sprites.factors_to_index(random)), random)


def test_sampled_factors_are_reproducible_and_cover_the_grid(sprites):
  a, b = sprites.sample_factors(5000, (3, 0, 7)), sprites.sample_factors(5000, (3, 0, 7))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, sprites.sample_factors(5000, (3, 0, 8)))
  np.testing.assert_array_equal(a.min(axis=0), [0] * 5)
  np.testing.assert_array_equal(a.max(axis=0), np.array(sprites.factor_sizes) - 1)


def test_render_is_deterministic_binary_and_64x64(sprites):
  factors = sprites.sample_factors(64, (1,))
  images = sprites.render(factors)
  assert images.shape == (64, 64, 64, 1) and images.dtype == np.uint8
  assert set(np.unique(images)) == {0, 255}
  np.testing.assert_array_equal(images, ProceduralDSprites().render(factors))
  assert (images.reshape(64, -1) > 0).sum(axis=1).min() > 20  # every image shows a sprite


def test_every_sprite_lies_inside_the_frame(sprites):
  # A clipped sprite would lose pixels; every shape/scale/orientation keeps its pixel count at the
  # four extreme positions.
  grid = np.array(list(itertools.product(range(3), range(6), range(40))))
  areas = []
  for px, py in [(0, 0), (31, 0), (0, 31), (31, 31), (16, 16)]:
    factors = np.concatenate([grid, np.tile([px, py], (len(grid), 1))], axis=1)
    areas.append((sprites.render(factors) > 0).sum(axis=(1, 2, 3)))
  for a in areas[1:]:
    np.testing.assert_array_equal(a, areas[0])
  # ...and no sprite is cut by the edge of the 32x32 box it is drawn in.
  masks = sprite_masks()
  assert masks[..., 0, :].max() == masks[..., -1, :].max() == 0
  assert masks[..., :, 0].max() == masks[..., :, -1].max() == 0


def test_distinct_positions_and_scales_give_distinct_images(sprites):
  for shape, orientation in itertools.product(range(3), (0, 7, 23)):
    scales = sprites.render(np.array([[shape, s, orientation, 16, 16] for s in range(6)]))
    xs = sprites.render(np.array([[shape, 3, orientation, x, 5] for x in range(32)]))
    ys = sprites.render(np.array([[shape, 3, orientation, 9, y] for y in range(32)]))
    for images in (scales, xs, ys):
      flat = images.reshape(len(images), -1)
      assert len({row.tobytes() for row in flat}) == len(images)
  areas = (scales > 0).sum(axis=(1, 2, 3))
  assert np.all(np.diff(areas) > 0)  # larger scale, larger sprite


def test_heart_orientations_are_distinct(sprites):
  images = sprites.render(np.array([[2, 5, o, 16, 16] for o in range(39)]))
  assert len({im.tobytes() for im in images}) == 39


def test_stream_batches_depend_only_on_seed_and_step(sprites):
  dataset = GroundTruthDataset(sprites, num_test=100)
  a, b = dataset.train_stream(32, seed=5), dataset.train_stream(32, seed=5)
  np.testing.assert_array_equal(a.batch(11)["image"], b.batch(11)["image"])
  assert not np.array_equal(a.batch(11)["image"], a.batch(12)["image"])
  assert not np.array_equal(a.batch(11)["image"], dataset.train_stream(32, 6).batch(11)["image"])
  assert a.batch(0)["image"].shape == (32, 64, 64, 1)


def test_test_split_is_the_same_for_every_run(sprites):
  a, b = GroundTruthDataset(sprites, num_test=50), GroundTruthDataset(sprites, num_test=50)
  np.testing.assert_array_equal(a.test_images, b.test_images)
  batches = list(a.eval_batches(20))
  assert sum(batch["mask"].sum() for batch in batches) == 50


def test_missing_original_dsprites_file_says_what_to_download(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_images, "_network_available", lambda *a, **k: False)
  with pytest.raises(DataError, match="dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"):
    tfds_images.prepare("dsprites", str(tmp_path))


def test_original_dsprites_interface_over_tfds(tmp_path):
  """TFDS's real dsprites builder with TFDS's mock records in place of the .hdf5 contents."""
  from vae_jax.data.dsprites_tfds import TFDSDSprites

  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5").write_bytes(b"")
  with tfds.testing.mock_data(num_examples=40):
    data = TFDSDSprites(str(tmp_path / "tfds"), str(manual), require_complete=False)
    examples = list(tfds.as_numpy(tfds.builder("dsprites").as_dataset(split="train")))
    with pytest.raises(DataError, match="holds .* of 737280"):
      TFDSDSprites(str(tmp_path / "tfds"), str(manual))
  labels = (
    "label_shape",
    "label_scale",
    "label_orientation",
    "label_x_position",
    "label_y_position",
  )
  factors = np.array([[ex[k] for k in labels] for ex in examples])
  images = data.render(factors)
  expected = np.stack([(ex["image"] > 0) * 255 for ex in examples]).astype(np.uint8)
  # Mock records may repeat a factor combination; the last one read wins.
  last = {tuple(f): i for i, f in enumerate(factors)}
  keep = sorted(last.values())
  np.testing.assert_array_equal(images[keep], expected[keep])
  assert data.factor_sizes == (3, 6, 40, 32, 32)
