"""Test setup: 4 simulated CPU devices (set before JAX starts) and tiny synthetic data."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tests compile the same small programs over and over, in this process, in the other xdist
# worker and in the subprocesses of end-to-end tests (which inherit the environment). JAX's
# persistent compilation cache makes every repeat a disk read; it caches only executables, so
# results are those of a fresh compile. Set JAX_COMPILATION_CACHE_DIR to move or share it. No size
# limit: with one, JAX scans every entry under a file lock on each write, and CI took longer than
# without the cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Most of the suite's time is compiling tiny programs. LLVM at -O0 compiles them about 3x faster
# (tests/test_vqvae_cprior.py: 44 s against 130 s cold) and runs them slower, which these sizes do
# not notice. Only the tests (and their subprocesses) see it; benchmarks and users' runs do not.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  os.environ["XLA_FLAGS"] = flags.strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import default  # noqa: E402
from vae_jax import configuration, models  # noqa: E402
from vae_jax.data import ArrayDataset  # noqa: E402


def synthetic_dataset(n_train: int = 256, n_test: int = 100, seed: int = 0) -> ArrayDataset:
  """Blob images whose brightness pattern depends on the label (so a VAE can learn them)."""
  rng = np.random.default_rng(seed)

  def split(n):
    labels = rng.integers(0, 10, n).astype(np.int32)
    yy, xx = np.mgrid[:28, :28]
    centers = np.stack([4 + 2 * labels, 24 - 2 * labels], 1)[:, :, None, None]
    d2 = (yy[None] - centers[:, 0]) ** 2 + (xx[None] - centers[:, 1]) ** 2
    images = 255 * np.exp(-d2 / 18.0) * rng.uniform(0.7, 1.0, (n, 1, 1))
    return images[..., None].astype(np.uint8), labels

  return ArrayDataset(*split(n_train), *split(n_test), num_classes=10)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """The default config shrunk to run in seconds: 8 steps, small MLP, batch 32.

  `model.name` picks the family (with its default fields) before the other overrides apply.
  """
  config = default.get_config()
  config.lock()  # An override of a field that does not exist is an error, not a new field.
  if "model.name" in overrides:
    models.select_model(config, overrides.pop("model.name"))
  config.model.hidden_sizes = (32,)
  config.model.conv_features = (8, 16)
  config.model.dense_sizes = (32,)
  config.model.latent_dim = 4
  config.data.batch_size = 32
  config.data.eval_batch_size = 40
  config.num_train_steps = 8
  config.log_every_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.num_image_examples = 4
  config.num_prior_samples = 4
  config.num_traversal_inputs = 2
  config.update_from_flattened_dict(overrides)
  return configuration.resolve(config)


@pytest.fixture(scope="session")
def dataset() -> ArrayDataset:
  return synthetic_dataset()


def mnist_dir() -> str | None:
  """Real MNIST files: $VAE_JAX_MNIST_DIR or ../shared/data/mnist beside the repo."""
  for d in (os.environ.get("VAE_JAX_MNIST_DIR"), os.path.join(REPO, "..", "shared/data/mnist")):
    if d and os.path.exists(os.path.join(d, "train-images-idx3-ubyte.gz")):
      return d
  return None
