"""Trains a VAE: `python -m vae_jax.main --config=configs/beta4.py --workdir=runs/beta4`.

Any config field can be overridden: `--config.objective.beta=8 --config.data.batch_size=256`.
Re-running the same command resumes from the newest checkpoint in the workdir.
"""

import logging as pylogging
import sys

import jax
import tensorflow as tf
from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import train
from vae_jax.checkpointing import CheckpointError
from vae_jax.config_checks import ConfigError
from vae_jax.data import DataError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and results.")
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter from Orbax (several lines per save); warnings and errors pass."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  """Validates flags, hides GPUs from TF, and runs training; known failures exit with one line."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TF only reads data here; keep it off the accelerators JAX uses.
  tf.config.set_visible_devices([], "GPU")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.info("JAX devices: %s", jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ConfigError, DataError, CheckpointError, train.NonFiniteLossError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
