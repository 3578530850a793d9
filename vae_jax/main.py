"""Trains a VAE: `python -m vae_jax.main --config=configs/beta4.py --workdir=runs/beta4`.

Any config field can be overridden: `--config.objective.beta=8 --config.data.batch_size=256`.
Re-running the same command resumes from the newest checkpoint in the workdir.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import cli
from vae_jax.training import preemption

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and results.")
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_list(
  "stop_signals",
  list(preemption.DEFAULT_SIGNALS),
  "Signals that save a checkpoint after the current dispatch and stop (exit status 128 + the "
  "signal's number); the same command resumes. A second signal exits at once.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  """Trains `--config` in `--workdir`; known failures exit with one line."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.hide_gpus_from_tensorflow()
  from vae_jax.training import train

  try:
    signals = preemption.parse_signals(tuple(FLAGS.stop_signals))
  except ValueError as e:
    cli.fail(f"--stop_signals: {e}")
  logging.info("JAX devices: %s", jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, stop_signals=signals)
  except preemption.Stopped as stopped:
    print(stopped, file=sys.stderr, flush=True)
    sys.exit(128 + stopped.signum)


def run() -> None:
  """Console-script entry point (`vae-jax-train`)."""
  cli.run(main)


if __name__ == "__main__":
  run()
