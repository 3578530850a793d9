"""Evaluates a trained run: `python -m vae_jax.evaluate --workdir=runs/mnist [--metrics=...]`.

Metrics (comma-separated; default every one that applies to the run): `elbo`, `iw_nll`
(importance-weighted NLL with --iw_samples samples), `diagnostics` (active units, KL per
dimension), and on ground-truth datasets `disentanglement` or any of beta_vae, factor_vae, mig, dci,
sap. Results go to <workdir>/eval/<metric>.json, are merged into <workdir>/eval/results.json and
logged to TensorBoard in <workdir>/eval at the checkpoint's step; see `vae_jax.eval_suite`.
"""

import sys

import jax
import tensorflow as tf
from absl import app, flags

from vae_jax import eval_suite, parallel, runs
from vae_jax.checkpointing import Checkpointer, CheckpointError
from vae_jax.config_checks import ConfigError
from vae_jax.data import DataError, load_dataset

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (lowest eval loss) or a step.")
flags.DEFINE_list(
  "metrics", None, f"Metrics among {eval_suite.GROUPS + tuple(eval_suite.ALIASES)}."
)
flags.DEFINE_integer("iw_samples", 1000, "Importance samples per example for iw_nll.")
flags.DEFINE_integer("iw_chunk", 100, "Importance samples evaluated at once (bounds memory).")
flags.DEFINE_integer("iw_batch_size", 100, "Examples per batch for iw_nll.")
flags.DEFINE_integer("batch_size", None, "Examples per batch for elbo, diagnostics.")
flags.DEFINE_integer("num_examples", None, "Use the first N test examples (default all).")
flags.DEFINE_integer("disentanglement_seed", 0, "Seed of the disentanglement metrics.")
flags.DEFINE_float(
  "disentanglement_scale", 1.0, "Multiplies the metrics' sample counts (1 = library defaults)."
)
flags.DEFINE_string("manual_dir", None, "Where the raw data files are on this machine.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir on this machine.")
flags.mark_flags_as_required(["workdir"])


def _evaluate() -> dict:
  """Checks everything that can be checked before compiling, then restores and evaluates."""
  overrides = {
    key: value
    for key, value in (("data.manual_dir", FLAGS.manual_dir), ("data.data_dir", FLAGS.data_dir))
    if value
  }
  config = runs.load_config(FLAGS.workdir)
  config.update_from_flattened_dict(overrides)
  options = eval_suite.EvalOptions(
    iw_samples=FLAGS.iw_samples,
    iw_chunk=FLAGS.iw_chunk,
    iw_batch_size=FLAGS.iw_batch_size,
    batch_size=FLAGS.batch_size,
    num_examples=FLAGS.num_examples,
    disentanglement_seed=FLAGS.disentanglement_seed,
    disentanglement_scale=FLAGS.disentanglement_scale,
  )
  mesh = parallel.make_mesh()
  options.validate(mesh.size, config)
  ckpt = Checkpointer(FLAGS.workdir, config.keep_checkpoints)
  step = runs.resolve_step(FLAGS.workdir, FLAGS.checkpoint, ckpt.all_steps())
  ckpt.close()
  dataset = load_dataset(config.data)
  metrics = eval_suite.select_metrics(FLAGS.metrics, config, dataset)
  run = runs.load_run(
    FLAGS.workdir, str(step), mesh=mesh, dataset=dataset, config_overrides=overrides
  )
  return eval_suite.evaluate_run(run, metrics, options, FLAGS.checkpoint, mesh)


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


def main(argv):
  """Hides GPUs from TF, evaluates and prints a table; known failures exit with one line."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TF only reads data here; keep it off the accelerators JAX uses.
  tf.config.set_visible_devices([], "GPU")
  try:
    results = _evaluate()
  except (ConfigError, DataError, CheckpointError) as e:
    sys.exit(f"error: {e}")
  print(f"Evaluated {FLAGS.workdir} on {jax.device_count()} devices:")
  print(_table(results))


if __name__ == "__main__":
  app.run(main)
