import os
import subprocess
import sys

import jax
import pytest
import tensorflow_datasets as tfds

from tests import helpers
from tests.conftest import REPO, mnist_dir, tiny_config
from vae_jax import configuration
from vae_jax.data.spec import DataSpec
from vae_jax.errors import CheckpointError, ConfigError
from vae_jax.training import mesh as meshes
from vae_jax.training import train


def _main(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, "-m", "vae_jax.main", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.mark.slow
def test_end_to_end_through_tfds_writes_checkpoints_results_and_tensorboard(tmp_path):
  """Real TFDS loading code with TFDS's own mock data in place of the MNIST records."""
  manual = tmp_path / "manual"
  manual.mkdir()
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
    (manual / name).write_bytes(b"")  # placeholders: the mocked prepare never reads them
  for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    (manual / name).write_bytes(b"")
  config = tiny_config(**{"data.manual_dir": str(manual), "data.data_dir": str(tmp_path / "tfds")})
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=96):
    results = train.train_and_evaluate(config, workdir, mesh=meshes.make_mesh(jax.devices()[:2]))
  assert results["step"] == 8
  for key in ("eval_loss", "eval_elbo", "eval_recon", "eval_kl", "train_examples_per_sec"):
    assert key in helpers.results(workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
  assert os.path.exists(os.path.join(workdir, "config.json"))
  tags = helpers.event_tags(workdir)
  expected = {"train/loss", "train/kl", "train/grad_norm", "train/learning_rate", "eval/elbo"}
  assert expected <= tags
  assert {"reconstructions", "prior_samples", "kl_per_dim/eval/00", "steps_per_sec"} <= tags


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.objective.beta=-1", "objective.beta=-1.0 must be >= 0"),
    ("--config.model.latent_dim=0", "model.latent_dim=0 must be >= 1"),
    ("--config.model.name=gan", "model.name='gan' is not one of"),
    ("--config.data.batch_size=127", "data.batch_size=127 must be a positive multiple of the 2"),
  ],
)
def test_bad_config_fails_fast_with_one_line(tmp_path, override, message):
  workdir = tmp_path / "w"
  proc = _main("--config=configs/mnist_mlp.py", f"--workdir={workdir}", override, timeout=120)
  last_line = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode != 0
  assert last_line.startswith("error: ") and message in last_line
  assert not workdir.exists()


def test_unknown_config_key_is_rejected(tmp_path):
  proc = _main("--config=configs/mnist_mlp.py", f"--workdir={tmp_path}", "--config.bogus=1")
  assert proc.returncode != 0 and "bogus" in proc.stderr


def test_unknown_dataset_fails_before_compiling(tmp_path):
  proc = _main(
    "--config=configs/mnist_mlp.py", f"--workdir={tmp_path}", "--config.data.name=not_a_dataset"
  )
  assert proc.returncode != 0
  assert "Unknown TFDS dataset 'not_a_dataset'" in proc.stderr.strip().splitlines()[-1]


def test_shapes_that_do_not_fit_are_rejected():
  config = tiny_config(**{"model.arch": "conv", "model.conv_features": (8, 8, 8)})
  with pytest.raises(ConfigError, match="multiples of 8; mnist images are 28x28"):
    configuration.validate_for_data(config, DataSpec((28, 28, 1), 10, 60_000), "mnist")
  config = tiny_config(**{"model.name": "cvae"})
  with pytest.raises(ConfigError, match="needs labels"):
    configuration.validate_for_data(config, DataSpec((28, 28, 1), 0, 60_000), "mnist")


def test_corrupt_checkpoint_is_reported_and_kept(dataset, tmp_path):
  workdir = str(tmp_path)
  mesh = meshes.make_mesh(jax.devices()[:1])
  train.train_and_evaluate(tiny_config(), workdir, mesh=mesh, dataset=dataset)
  ckpt = os.path.join(workdir, "checkpoints", "8")
  for root, _, files in os.walk(ckpt):
    for f in files:
      if f != "commit_success.txt" and "METADATA" not in f:
        open(os.path.join(root, f), "wb").close()
  before = sorted(os.listdir(ckpt))
  with pytest.raises(CheckpointError, match="checkpoints/8 cannot be restored"):
    train.train_and_evaluate(tiny_config(), workdir, mesh=mesh, dataset=dataset)
  assert sorted(os.listdir(ckpt)) == before


def test_workdir_of_another_config_is_refused(dataset, tmp_path):
  mesh = meshes.make_mesh(jax.devices()[:1])
  train.train_and_evaluate(tiny_config(), str(tmp_path), mesh=mesh, dataset=dataset)
  with pytest.raises(CheckpointError, match=r"different config \(objective.beta\)"):
    train.train_and_evaluate(
      tiny_config(**{"objective.beta": 2.0}), str(tmp_path), mesh=mesh, dataset=dataset
    )


@pytest.mark.slow
@pytest.mark.skipif(mnist_dir() is None, reason="real MNIST not found ($VAE_JAX_MNIST_DIR)")
def test_main_trains_on_real_mnist_offline(tmp_path):
  workdir = tmp_path / "run"
  args = [
    "--config=configs/mnist_mlp.py",
    f"--workdir={workdir}",
    f"--config.data.manual_dir={mnist_dir()}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.num_train_steps=60",
    "--config.log_every_steps=20",
    "--config.eval_every_steps=30",
    "--config.checkpoint_every_steps=30",
  ]
  proc = _main(*args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = helpers.results(str(workdir))
  assert results["step"] == 60 and results["num_devices"] == 2
  assert 100 < -results["eval_elbo"] < 250  # far below the ~550 nats of an untrained model
  assert sorted(os.listdir(workdir / "checkpoints")) == ["30", "60"]
  assert {"train/loss", "reconstructions", "prior_samples"} <= helpers.event_tags(str(workdir))
