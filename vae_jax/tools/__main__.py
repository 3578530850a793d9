"""`python -m vae_jax.tools <command> --workdir=RUN [--checkpoint=latest|best|STEP] [options]`.

Commands: sample, reconstruct, interpolate, traverse, arithmetic, anomaly, denoise, augment,
latent-map. Every command writes into RUN/tools/ and prints the paths; see each option's help. An
option that a command does not take, or that the run cannot serve, is an error line before anything
is restored or compiled.
"""

import dataclasses
import os

from absl import flags, logging

from vae_jax import cli

_ABSL_FLAGS = set(flags.FLAGS)
flags.DEFINE_string("workdir", None, "The training run (written by vae_jax.main).")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (lowest eval loss) or a step.")
flags.DEFINE_string(
  "manual_dir", None, "Where the raw data files are here (same as --config.data.manual_dir)."
)
flags.DEFINE_integer("seed", None, "Seed of the tool's randomness; default the run's config.seed.")
flags.DEFINE_string("out", None, "Output file stem in RUN/tools; default the command's name.")
# Command options; None means the command's default.
flags.DEFINE_integer("num", None, "Examples or samples (sample 64, reconstruct/denoise 16, ...).")
flags.DEFINE_float("temperature", None, "sample/augment: scale of the prior/posterior std (1.0).")
flags.DEFINE_integer("label", None, "sample/latent-map: class for a conditional model.")
flags.DEFINE_integer("index_a", None, "interpolate: first test example (0).")
flags.DEFINE_integer("index_b", None, "interpolate: second test example (1).")
flags.DEFINE_integer("steps", None, "interpolate/traverse: points per row (10).")
flags.DEFINE_string("mode", None, "interpolate: linear | slerp | both (both).")
flags.DEFINE_integer("index", None, "traverse: test example (0).")
flags.DEFINE_float("range", None, "traverse: values in [-range, range] (3).")
flags.DEFINE_string("dims", None, "traverse: 'all' or latent indices like '0,3' (all).")
flags.DEFINE_integer("a", None, "arithmetic: class a of a - b + c.")
flags.DEFINE_integer("b", None, "arithmetic: class b of a - b + c.")
flags.DEFINE_integer("c", None, "arithmetic: class c of a - b + c.")
flags.DEFINE_string("score", None, "anomaly: elbo (-ELBO) | iw_nll (elbo).")
flags.DEFINE_integer("heldout", None, "anomaly: anomalous class (default data.exclude_labels).")
flags.DEFINE_integer("iw_samples", None, "anomaly: importance samples of iw_nll (100).")
flags.DEFINE_string(
  "ood_dataset", None, "anomaly: score the test split against this dataset's (e.g. mnist)."
)
flags.DEFINE_string(
  "ood_manual_dir", None, "anomaly: raw files of --ood_dataset (TFDS manual_dir)."
)
flags.DEFINE_string("noise", None, "denoise: gaussian | salt_pepper (gaussian).")
flags.DEFINE_float("level", None, "denoise: noise std or flip probability (0.3).")
flags.DEFINE_integer("num_eval", None, "denoise: test examples the PSNRs average over (1000).")
flags.DEFINE_string("split", None, "augment: train | test (train).")
flags.DEFINE_integer("num_per_example", None, "augment: draws per source example (4).")
FLAGS = flags.FLAGS
_RUN_FLAGS = ("workdir", "checkpoint", "manual_dir")
_OPTION_FLAGS = sorted(set(FLAGS) - _ABSL_FLAGS - set(_RUN_FLAGS))  # seed, out, num, ...


def _options(name: str, command) -> dict:
  """The options given on the command line; an option the command does not take is an error."""
  fields = {f.name for f in dataclasses.fields(command.options)}
  given = {}
  for flag in _OPTION_FLAGS:
    if not FLAGS[flag].present:
      continue
    if flag not in fields:
      cli.fail(f"{name} does not take --{flag}; it takes {sorted(fields)}.")
    given[flag] = FLAGS[flag].value
  return given


def _print(result: dict) -> None:
  for key in ("summary", "dims", "notes"):
    if result.get(key) is None:
      continue
    value = result[key]
    if isinstance(value, dict):
      for k, v in value.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    elif key == "notes":
      for note in value:
        print(f"note: {note}")
    else:
      print(f"{key} (rows, by decreasing KL when known): {value}")
  for path in result["files"]:
    print(f"wrote {path}")


def main(argv: list[str]) -> None:
  """Checks the command and its options against the run, restores it and runs the tool."""
  from vae_jax import runs, tools
  from vae_jax.tools import common

  if len(argv) != 2 or argv[1] not in tools.COMMANDS:
    got = " ".join(argv[1:]) or "nothing"
    cli.fail(f"expected one command of {', '.join(tools.COMMANDS)}; got {got}.")
  if not FLAGS.workdir:
    cli.fail("--workdir=RUN is required.")
  command, run_command = tools.COMMANDS[argv[1]]
  options = _options(argv[1], command)
  logging.set_verbosity(logging.WARNING)
  cli.hide_gpus_from_tensorflow()
  overrides = (
    {"data.manual_dir": FLAGS.manual_dir} if FLAGS.manual_dir else {}
  ) | cli.run_overrides()
  run = tools.open_run(FLAGS.workdir, FLAGS.checkpoint, overrides=overrides, restore=False)
  command.parse(run, options)
  runs.check_workdir(os.path.join(run.workdir, common.TOOLS_DIR))
  run = tools.restore_run(run)
  result = run_command(run, **options)
  print(f"{argv[1]}: {run.workdir} at step {run.step}")
  _print(result)


def run() -> None:
  """Console-script entry point (`vae-jax-tools`)."""
  cli.run(main)


if __name__ == "__main__":
  run()
