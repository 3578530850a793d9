"""Evaluates a trained run: `python -m vae_jax.evaluate --workdir=runs/mnist [--metrics=...]`.

Metrics (comma-separated; default every one that applies to the run, except `ais` and `bdmc`):
`elbo`, `iw_nll` (importance-weighted NLL with --iw_samples samples), `ais` (annealed importance
sampling NLL: --ais_chains chains per example, --ais_steps intermediate distributions,
--ais_leapfrog leapfrog steps per HMC move), `bdmc` (forward and reverse AIS bounds on
--bdmc_examples examples simulated from the model), `diagnostics` (active units, KL per
dimension), on ground-truth datasets `disentanglement` or any of beta_vae, factor_vae, mig, dci,
sap, and on request `fid` and `precision_recall` (--sample_quality_n model samples against as many
test images, in the space of the feature network in --features_workdir). Results go to
<workdir>/eval/<metric>.json, are merged into <workdir>/eval/results.json and logged to
TensorBoard in <workdir>/eval at the checkpoint's step; see `vae_jax.evaluation.suite`.
"""

import os

import jax
from absl import app, flags

from vae_jax import cli, runs
from vae_jax.evaluation import ais, suite
from vae_jax.training import mesh as meshes

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (lowest eval loss) or a step.")
flags.DEFINE_list("metrics", None, f"Metrics among {suite.GROUPS + tuple(suite.ALIASES)}.")
flags.DEFINE_integer("iw_samples", 1000, "Importance samples per example for iw_nll.")
flags.DEFINE_integer("iw_chunk", 100, "Importance samples evaluated at once (bounds memory).")
flags.DEFINE_integer("iw_batch_size", 100, "Examples per batch for iw_nll.")
flags.DEFINE_integer("ais_chains", 16, "AIS chains per example (ais, bdmc).")
flags.DEFINE_integer("ais_steps", 1000, "AIS intermediate distributions T (ais, bdmc).")
flags.DEFINE_integer("ais_leapfrog", 10, "Leapfrog steps per AIS HMC transition (ais, bdmc).")
flags.DEFINE_enum("ais_schedule", "sigmoid", ais.SCHEDULES, "AIS betas (ais, bdmc).")
flags.DEFINE_integer("ais_batch_size", 100, "Examples per AIS batch (ais, bdmc).")
flags.DEFINE_integer("bdmc_examples", 100, "Examples simulated from the model for bdmc.")
flags.DEFINE_string(
  "features_workdir", None, "fid, precision_recall: the feature network trained on the run's data."
)
flags.DEFINE_integer(
  "sample_quality_n", None, "fid, precision_recall: samples and test images (default all test)."
)
flags.DEFINE_integer("precision_recall_k", 3, "precision_recall: k of the k-NN balls.")
flags.DEFINE_integer("batch_size", None, "Examples per batch for elbo, diagnostics.")
flags.DEFINE_integer("num_examples", None, "Use the first N test examples (default all).")
flags.DEFINE_integer("disentanglement_seed", 0, "Seed of the disentanglement metrics.")
flags.DEFINE_float(
  "disentanglement_scale", 1.0, "Multiplies the metrics' sample counts (1 = library defaults)."
)
flags.DEFINE_string(
  "manual_dir", None, "Where the raw data files are here (same as --config.data.manual_dir)."
)
flags.DEFINE_string("data_dir", None, "TFDS data_dir here (same as --config.data.data_dir).")
flags.mark_flags_as_required(["workdir"])


def _evaluate() -> dict:
  """Checks everything that can be checked before compiling, then restores and evaluates."""
  overrides = {
    key: value
    for key, value in (("data.manual_dir", FLAGS.manual_dir), ("data.data_dir", FLAGS.data_dir))
    if value
  }
  overrides |= cli.run_overrides()
  run = runs.open_run(FLAGS.workdir, FLAGS.checkpoint, overrides=overrides, restore=False)
  options = suite.EvalOptions(
    iw_samples=FLAGS.iw_samples,
    iw_chunk=FLAGS.iw_chunk,
    iw_batch_size=FLAGS.iw_batch_size,
    batch_size=FLAGS.batch_size,
    num_examples=FLAGS.num_examples,
    disentanglement_seed=FLAGS.disentanglement_seed,
    disentanglement_scale=FLAGS.disentanglement_scale,
    ais_settings=ais.Settings(
      num_chains=FLAGS.ais_chains,
      num_steps=FLAGS.ais_steps,
      leapfrog_steps=FLAGS.ais_leapfrog,
      schedule=FLAGS.ais_schedule,
      batch_size=FLAGS.ais_batch_size,
    ),
    bdmc_examples=FLAGS.bdmc_examples,
    features_workdir=FLAGS.features_workdir,
    sample_quality_n=FLAGS.sample_quality_n,
    precision_recall_k=FLAGS.precision_recall_k,
  )
  mesh = meshes.make_mesh()
  options.validate(mesh.size, run.config)
  runs.check_workdir(os.path.join(FLAGS.workdir, suite.EVAL_DIR))
  metrics = suite.select_metrics(FLAGS.metrics, run.config, run.dataset)
  suite.check_requests(metrics, options, run.config, run.dataset)
  run = runs.restore_run(run, mesh)
  return suite.evaluate_run(run, metrics, options, FLAGS.checkpoint, mesh)


def _table(results: dict) -> str:
  lines = []
  for group, record in results.items():
    lines.append(f"{group} (step {record['step']}, checkpoint {record['checkpoint']})")
    for key, value in record.items():
      if key in ("step", "checkpoint") or isinstance(value, list | dict):
        continue
      shown = f"{value:.4f}" if isinstance(value, float) else str(value)
      lines.append(f"  {key:<30} {shown}")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  """Evaluates and prints a table; known failures exit with one line."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.hide_gpus_from_tensorflow()
  results = _evaluate()
  print(f"Evaluated {FLAGS.workdir} on {jax.device_count()} devices:")
  print(_table(results))


def run() -> None:
  """Console-script entry point (`vae-jax-evaluate`)."""
  cli.run(main)


if __name__ == "__main__":
  run()
