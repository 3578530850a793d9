import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tests.conftest import REPO, synthetic_dataset, tiny_config
from vae_jax import configuration, runs
from vae_jax.data import ArrayDataset
from vae_jax.data.spec import DataSpec
from vae_jax.errors import ConfigError
from vae_jax.models import build_model, codes
from vae_jax.tools import ToolError, anomaly, common, generation, latent_map, open_run
from vae_jax.tools import reconstruction as recon_tools
from vae_jax.training import mesh as meshes
from vae_jax.training import train

HELDOUT = 9  # The blob class at the edge of the synthetic images: unlike anything trained on.
CELL = 29  # A 28-pixel image plus the grid's 1-pixel padding.


def _grid_shape(rows: int, cols: int) -> tuple[int, int]:
  return rows * CELL + 1, cols * CELL + 1


def _png_shape(path: str) -> tuple[int, ...]:
  return np.asarray(Image.open(path)).shape


@pytest.fixture(scope="module")
def data() -> ArrayDataset:
  return synthetic_dataset().without_train_labels((HELDOUT,))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> runs.Run:
  """One tiny VAE (latent_dim 2) trained without class 9, restored as the tools see it."""
  workdir = str(tmp_path_factory.mktemp("tools") / "run")
  config = tiny_config(
    **{
      "model.latent_dim": 2,
      "model.hidden_sizes": (64,),
      "data.exclude_labels": (HELDOUT,),
      "optimizer.learning_rate": 3e-3,
      "num_train_steps": 150,
      "log_every_steps": 75,
      "eval_every_steps": 150,
      "checkpoint_every_steps": 150,
    }
  )
  mesh = meshes.make_mesh(jax.devices()[:1])
  train.train_and_evaluate(config, workdir, mesh=mesh, dataset=data)
  return open_run(workdir, dataset=data)


def _untrained_run(tmp_path, dataset, with_variables: bool = True, **overrides) -> runs.Run:
  """A run object with freshly initialised variables, or none (all a tool's checks read)."""
  config = tiny_config(**overrides)
  model = build_model(config.model, dataset.spec)
  model_vars = None
  if with_variables:
    x = jnp.zeros((2, *dataset.image_shape))
    y = jnp.zeros((2,), jnp.int32) if dataset.num_classes else None
    key = jax.random.key(0)
    model_vars = jax.jit(model.init)(key, x, jax.random.split(key, 2), y)
  return runs.Run(str(tmp_path), config, model, dataset, 0, model_vars)


# Helpers with known answers.


def test_psnr_is_exact_on_known_arrays():
  clean = np.zeros((2, 4, 4, 1))
  other = np.stack([np.full((4, 4, 1), 0.1), np.full((4, 4, 1), 0.01)])
  np.testing.assert_allclose(recon_tools.psnr(clean, other), [20.0, 40.0])
  assert recon_tools.psnr(clean, clean)[0] == np.inf


def test_roc_auc_matches_the_pairwise_count():
  assert anomaly.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
  rng = np.random.default_rng(0)
  scores, positive = rng.normal(size=50), rng.random(50) < 0.3
  pairs = scores[positive][:, None] - scores[~positive][None, :]
  expected = (pairs > 0).mean() + 0.5 * (pairs == 0).mean()
  assert anomaly.roc_auc(scores, positive) == pytest.approx(expected)
  with pytest.raises(ToolError, match="both groups"):
    anomaly.roc_auc(scores, np.zeros(50, bool))


def test_slerp_keeps_a_vector_with_itself_and_follows_the_circle():
  v = np.array([0.3, -1.2, 2.0])
  t = np.linspace(0, 1, 5)
  np.testing.assert_allclose(codes.slerp(v, v, t), np.tile(v, (5, 1)), atol=1e-12)
  e0, e1 = np.eye(2)
  path = codes.slerp(e0, e1, t)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-12)
  np.testing.assert_allclose(path[2], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
  np.testing.assert_allclose(codes.lerp(e0, e1, t)[2], [0.5, 0.5])


def test_pca_finds_the_axis_of_largest_variance():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(500, 3)) * [0.1, 5.0, 1.0]
  coords, explained = latent_map.pca_2d(points)
  assert coords.shape == (500, 2) and explained[0] > explained[1] > 0
  assert abs(np.corrcoef(coords[:, 0], points[:, 1])[0, 1]) > 0.99


def test_exclude_labels_removes_only_training_examples(dataset):
  kept = dataset.without_train_labels((3, 5))
  assert not np.isin(kept.train_labels, (3, 5)).any()
  assert len(kept.train_images) == np.isin(dataset.train_labels, (3, 5), invert=True).sum()
  np.testing.assert_array_equal(kept.test_images, dataset.test_images)
  for bad, message in [((10,), "must be labels in \\[0, 10\\)"), (tuple(range(10)), "every class")]:
    config = tiny_config(**{"data.exclude_labels": bad})
    with pytest.raises(ConfigError, match=message):
      configuration.validate_for_data(config, dataset.spec, "mnist")
  with pytest.raises(ConfigError, match="needs labels"):
    configuration.validate_for_data(
      tiny_config(**{"data.exclude_labels": (1,)}), DataSpec((28, 28, 1), 0, 60_000), "mnist"
    )


# Every command on the trained run.


def test_sample_reconstruct_and_traverse_write_grids_of_the_right_size(run):
  result = generation.run_sample(run, num=12, temperature=0.5)
  assert _png_shape(result["files"][0]) == _grid_shape(3, 4)
  result = recon_tools.run_reconstruct(run, num=6)
  assert _png_shape(result["files"][0]) == _grid_shape(2, 6)
  assert result["psnr"] > 15  # The blobs are learnt: a bad model scores about 10 dB.
  result = generation.run_traverse(run, index=3, steps=7, range=2.0)
  assert _png_shape(result["files"][0]) == _grid_shape(2, 7)
  kl = result["kl_per_dim"]
  assert sorted(result["dims"]) == [0, 1] and kl[result["dims"][0]] >= kl[result["dims"][1]]
  assert {"sample", "reconstruct", "traverse"} <= helpers.event_tags(
    os.path.join(run.workdir, "tools")
  )


def test_interpolation_ends_are_the_reconstructions_of_the_two_inputs(run):
  result = generation.run_interpolate(run, index_a=2, index_b=5, steps=6)
  assert _png_shape(result["files"][0]) == _grid_shape(2, 8)
  x = common.inference(run).inputs(run.dataset.test_images[[2, 5]])
  code = run.model.apply(run.model_vars, x, method=run.model.encode).mean
  expected = jax.nn.sigmoid(run.model.apply(run.model_vars, code, method=run.model.decode))
  for mode in ("linear", "slerp"):
    images = result["images"][mode]
    assert images.shape == (6, 28, 28, 1)
    np.testing.assert_allclose(images[[0, -1]], expected, atol=1e-5, err_msg=mode)
  assert not np.allclose(result["images"]["linear"][2], result["images"]["slerp"][2], atol=1e-4)


def test_arithmetic_decodes_class_means_and_their_combination(run):
  result = generation.run_arithmetic(run, a=1, b=2, c=3)
  assert _png_shape(result["files"][0]) == _grid_shape(1, 4)
  labels = run.dataset.test_labels
  x = common.inference(run).inputs(run.dataset.test_images)
  mu = run.model.apply(run.model_vars, x, method=run.model.encode).mean
  means = [np.asarray(mu)[labels == k].mean(0) for k in (1, 2, 3)]
  np.testing.assert_allclose(result["latents"][:3], means, atol=1e-5)
  np.testing.assert_allclose(result["latents"][3], means[0] - means[1] + means[2], atol=1e-5)


def test_denoising_raises_the_psnr_of_noisy_inputs(run):
  for noise in ("gaussian", "salt_pepper"):
    result = recon_tools.run_denoise(run, noise=noise, level=0.3, num=5, num_eval=100)
    summary = result["summary"]
    assert _png_shape(result["files"][0]) == _grid_shape(3, 5)
    with open(result["files"][1]) as f:
      assert json.load(f) == summary
    noisy = recon_tools.psnr(result["clean"][:100], result["noisy"][:100]).mean()
    assert summary["psnr_noisy"] == pytest.approx(noisy)
    assert summary["psnr_denoised"] > summary["psnr_noisy"] + 3, summary


def test_heldout_class_scores_as_anomalous(run):
  result = anomaly.run_anomaly(run)  # --heldout defaults to the run's data.exclude_labels.
  summary = result["summary"]
  assert summary["heldout"] == [HELDOUT] and summary["num_examples"] == 100
  np.testing.assert_array_equal(result["positive"], run.dataset.test_labels == HELDOUT)
  assert summary["roc_auc"] == pytest.approx(anomaly.roc_auc(result["scores"], result["positive"]))
  assert summary["roc_auc"] > 0.8, summary
  with open(result["files"][1]) as f:
    assert json.load(f)["roc_auc"] == summary["roc_auc"]
  iw = anomaly.run_anomaly(run, score="iw_nll", iw_samples=30, num=60, heldout=HELDOUT)
  # The importance-weighted NLL is a tighter bound: below -ELBO on average.
  assert iw["scores"].mean() < result["scores"][:60].mean()
  assert iw["summary"]["roc_auc"] > 0.8


def test_augment_saves_labelled_draws_around_each_example(run):
  result = recon_tools.run_augment(run, split="test", num=10, num_per_example=3)
  npz_path, png_path = result["files"]
  assert npz_path.endswith("augment_test.npz")
  saved = np.load(npz_path)
  assert saved["images"].shape == (30, 28, 28, 1) and saved["images"].dtype == np.uint8
  np.testing.assert_array_equal(saved["source_index"], np.repeat(np.arange(10), 3))
  np.testing.assert_array_equal(saved["labels"], run.dataset.test_labels[saved["source_index"]])
  assert _png_shape(png_path) == _grid_shape(8, 4)
  cold = recon_tools.run_augment(run, split="train", num=4, num_per_example=2, temperature=0.0)
  recon = common.inference(run).reconstruct(
    common.inference(run).inputs(run.dataset.train_images[:4])
  )
  np.testing.assert_allclose(cold["images"][::2] / 255.0, recon, atol=1 / 255 + 1e-6)


def test_latent_map_scatters_and_decodes_a_grid_for_two_latents(run, tmp_path, data):
  result = latent_map.run_latent_map(run, num=80)
  scatter, grid = result["files"]
  assert grid.endswith("latent_map_grid.png")
  assert _png_shape(grid) == _grid_shape(latent_map.GRID_STEPS, latent_map.GRID_STEPS)
  assert _png_shape(scatter)[-1] in (3, 4) and result["coords"].shape == (80, 2)
  wide = _untrained_run(tmp_path, data, **{"model.latent_dim": 5})
  result = latent_map.run_latent_map(wide, num=50)
  assert len(result["files"]) == 1 and "no decoded grid" in result["notes"][0]


def test_outputs_are_never_overwritten(run):
  first = recon_tools.run_reconstruct(run, num=2, out="mine.png")["files"][0]
  with pytest.raises(ToolError, match="exists; choose another --out"):
    recon_tools.run_reconstruct(run, num=2, out="mine")
  again = [recon_tools.run_reconstruct(run, num=2)["files"][0] for _ in range(2)]
  assert first.endswith("tools/mine.png") and len({first, *again}) == 3


# Other model families and bad requests.


def test_conditional_sampling_gives_each_column_a_class(tmp_path, dataset):
  cvae = _untrained_run(tmp_path, dataset, **{"model.name": "cvae"})
  result = generation.run_sample(cvae, num=20)
  np.testing.assert_array_equal(result["labels"], np.arange(20) % 10)
  assert _png_shape(result["files"][0]) == _grid_shape(2, 10)
  result = generation.run_sample(cvae, num=4, label=7)
  np.testing.assert_array_equal(result["labels"], [7] * 4)
  with pytest.raises(ToolError, match="--label=10 is not a class"):
    generation.run_sample(cvae, label=10)
  with pytest.raises(ToolError, match="latents carry no class"):
    generation.run_arithmetic(cvae, a=1, b=2, c=3)


@pytest.mark.parametrize(
  "model,tool,options,message",
  [
    ("ae", generation.run_sample, {}, "has no prior to sample"),
    ("ae", recon_tools.run_augment, {}, "augment needs a VAE"),
    ("ae", anomaly.run_anomaly, {"score": "iw_nll"}, "Use --score=elbo"),
    ("vae", generation.run_sample, {"label": 3}, "needs a class-conditional model"),
    ("vae", generation.run_arithmetic, {"a": 1, "b": 2}, "needs three classes"),
    ("vae", generation.run_interpolate, {"index_b": 100}, "outside the test split"),
    ("vae", generation.run_traverse, {"dims": "0,9"}, "\\[9\\] outside 0..3"),
    ("vae", generation.run_sample, {"bogus": 1}, "sample does not take \\['bogus'\\]"),
    ("unlabelled", generation.run_arithmetic, {"a": 1, "b": 2, "c": 3}, "--a needs labels"),
    ("unlabelled", anomaly.run_anomaly, {"heldout": 1}, "--heldout needs labels"),
  ],
)
def test_requests_the_run_cannot_serve_fail_before_any_output(
  tmp_path, dataset, model, tool, options, message
):
  if model == "unlabelled":
    d = dataset
    dataset = ArrayDataset(d.train_images, None, d.test_images, None, num_classes=0)
  name = "vae" if model != "ae" else "ae"
  bad = _untrained_run(tmp_path, dataset, with_variables=False, **{"model.name": name})
  with pytest.raises(ToolError, match=message):
    tool(bad, **options)
  assert not os.path.exists(tmp_path / "tools")


def test_cli_on_a_run_without_checkpoints_prints_one_error_line(run, tmp_path):
  workdir = tmp_path / "untrained"
  workdir.mkdir()
  shutil.copy(os.path.join(run.workdir, "config.json"), workdir)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
    [sys.executable, "-m", "vae_jax.tools", "sample", f"--workdir={workdir}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode != 0
  assert lines[-1] == f"error: {workdir} has no checkpoints; train it first with vae_jax.main."
  assert sum(line.startswith("error:") for line in lines) == 1
  assert not (workdir / "tools").exists()
