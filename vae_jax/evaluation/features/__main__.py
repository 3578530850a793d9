"""Trains a feature network for `fid` and `precision_recall`, or shows one.

    python -m vae_jax.evaluation.features train --dataset=mnist --manual_dir=DATA \
        --workdir=FEATS/mnist
    python -m vae_jax.evaluation.features show --workdir=FEATS/mnist

`train` fits a small CNN classifier (labels; for procedural dSprites every factor as a class) on
the training split, writes Orbax params and feature_net.json (with its test accuracy) to
--workdir, and reuses a network already trained there with the same settings.
"""

import json

from absl import flags

from vae_jax import cli
from vae_jax.evaluation.features import store

COMMANDS = ("train", "show")
flags.DEFINE_string("workdir", None, "Where the feature network is (or goes).")
flags.DEFINE_string("dataset", None, "train: data.name of the runs to score (mnist, ...).")
flags.DEFINE_string("manual_dir", None, "train: folder with the raw data files (offline TFDS).")
flags.DEFINE_string("data_dir", None, "train: TFDS data_dir.")
flags.DEFINE_integer("epochs", 3, "train: passes over the training data.")
flags.DEFINE_integer("seed", 0, "train: seed of the keys (init, shuffling, sampled factors).")
flags.DEFINE_integer("num_train", 100_000, "train: images sampled for a ground-truth dataset.")
flags.DEFINE_integer("batch_size", 128, "train: examples per Adam step.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  """Runs `train` or `show`; known failures exit with one line."""
  if len(argv) != 2 or argv[1] not in COMMANDS:
    cli.fail(f"give one command among {COMMANDS}, e.g. `train --dataset=mnist --workdir=DIR`.")
  if argv[1] == "show":
    print(json.dumps(store.check_exists(FLAGS.workdir), indent=2))
    return
  if not FLAGS.dataset:
    cli.fail("train needs --dataset (the data.name of the runs it will score, e.g. mnist).")
  cli.hide_gpus_from_tensorflow()
  options = store.TrainOptions(
    dataset=FLAGS.dataset,
    workdir=FLAGS.workdir,
    manual_dir=FLAGS.manual_dir,
    data_dir=FLAGS.data_dir,
    epochs=FLAGS.epochs,
    seed=FLAGS.seed,
    num_train=FLAGS.num_train,
    batch_size=FLAGS.batch_size,
  )
  info = store.train_and_save(options)
  per_head = ", ".join(f"{k} {v:.4f}" for k, v in info["test_accuracy_per_head"].items())
  print(
    f"Feature network for {info['dataset']} in {FLAGS.workdir}: test accuracy "
    f"{info['test_accuracy']:.4f} ({per_head}), {info['train_seconds']:.0f} s of training."
  )


def run() -> None:
  """Console-script entry point (`vae-jax-features`)."""
  cli.run(main)


if __name__ == "__main__":
  run()
