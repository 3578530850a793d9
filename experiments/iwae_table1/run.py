"""Trains and evaluates IWAE Table 1 cells, and collects them into a table.

  python -m experiments.iwae_table1.run train --cell=vae1_k1 --workdir=runs/iwae/vae1_k1 \
      --manual_dir=../shared/data/mnist [--short] [--num_examples=N] [--epochs=N] [--seed=S]
  python -m experiments.iwae_table1.run report --root=runs/iwae [--out=experiments/iwae_table1]

`train` trains the cell with the project's loop (re-running it resumes from the newest checkpoint;
SIGTERM saves and stops), then evaluates the test NLL with k = 5,000 importance samples
(`vae_jax.evaluate`'s `iw_nll` group: chunked, device-parallel) and the active units of each
stochastic layer as the paper counts them (A_u = Cov_x(E_q[u]) > 0.01, E_q estimated from 100
posterior samples), and writes `<workdir>/table1.json`. `report` reads every `*/table1.json` under
`--root` and writes `table1.md`, `table1.csv` and `table1.png` beside the paper's values.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from experiments.iwae_table1 import config as table1
from experiments.iwae_table1 import report


def active_units(run, num_examples: int, num_samples: int = 100) -> list[int]:
  """Active units of each stochastic layer (bottom first) on the first test images.

  A unit u is active when Cov_x(E_q[u | x]) > 0.01 (Burda et al. 2015). E_q[u | x] averages the
  layer's posterior mean over samples of the layers below; averaging the samples of u itself would
  add a noise floor of Var_q(u) / num_samples (0.01 for an inactive unit at 100 samples), which
  counts about half of the inactive units as active.
  """
  import jax

  from vae_jax.data.preprocess import preprocess
  from vae_jax.evaluation.likelihood import evaluation_key

  model, images = run.model, run.dataset.test_images[:num_examples]
  key = evaluation_key(run.config.seed)

  @jax.jit
  def layer_expectations(x, keys):
    def layers(k):
      out = model.apply(run.model_vars, x, k)
      stacked = sorted(k for k in out.stats if k.startswith("mu_layer_"))
      return [out.stats[k] for k in stacked] or [out.stats["mu"]]

    return [z.mean(axis=0) for z in jax.vmap(layers)(keys)]

  means = []
  for start in range(0, len(images), 500):
    x = preprocess(images[start : start + 500], None)
    keys = jax.random.split(jax.random.fold_in(key, start), num_samples * len(x))
    keys = keys.reshape(num_samples, len(x))
    means.append([np.asarray(m) for m in layer_expectations(x, keys)])
  layers = [np.concatenate(parts) for parts in zip(*means, strict=True)]
  return [int((np.var(m, axis=0) > 0.01).sum()) for m in layers]


def cell_config(args):
  """The cell's config with the command line's overrides; exits with one error line if bad."""
  config = table1.get_config("short" if args.short else "")
  config.update_from_flattened_dict(table1.cell_overrides(args.cell))
  if args.manual_dir:
    config.data.manual_dir = args.manual_dir
  if args.epochs is not None:
    if not 1 <= args.epochs <= config.num_epochs:
      sys.exit(f"error: --epochs={args.epochs} must be in [1, {config.num_epochs}].")
    config.num_epochs = args.epochs  # The schedule's first epochs; the stages stay as they are.
  if args.seed is not None:
    config.seed = args.seed
  return config


def train_cell(args) -> dict:
  """Trains (or resumes) and evaluates one cell; returns what it writes to table1.json."""
  config = cell_config(args)
  from vae_jax import cli, runs
  from vae_jax.evaluation import suite
  from vae_jax.training import preemption, train

  cli.hide_gpus_from_tensorflow()
  start = time.time()
  try:
    results = train.train_and_evaluate(config, args.workdir)
  except preemption.Stopped as stopped:
    print(stopped, file=sys.stderr)
    sys.exit(128 + stopped.signum)
  train_wall = time.time() - start
  run = runs.open_run(args.workdir)
  options = suite.EvalOptions(
    iw_samples=args.iw_samples, iw_chunk=100, iw_batch_size=100, num_examples=args.num_examples
  )
  start = time.time()
  iw = suite.evaluate_run(run, ["iw_nll"], options)["iw_nll"]
  eval_wall = time.time() - start
  n = len(run.dataset.test_images) if args.num_examples is None else args.num_examples
  record = {
    "cell": args.cell,
    "short": args.short,
    "step": results["step"],
    "epochs": config.num_epochs,
    "test_nll": iw["iw_nll"],
    "test_nll_stderr": iw["iw_nll_stderr"],
    "iw_samples": iw["iw_samples"],
    "num_examples": iw["num_examples"],
    "test_nll_elbo": iw["nll_elbo"],
    "active_units": active_units(run, n),
    "seed": config.seed,
    "train_examples_per_sec": results["train_examples_per_sec"],
    "train_wall_sec_this_session": train_wall,
    "eval_wall_sec": eval_wall,
  }
  runs.write_json(os.path.join(args.workdir, "table1.json"), record)
  return record


def parser() -> argparse.ArgumentParser:
  """The command line of `train` and `report`."""
  parser = argparse.ArgumentParser(description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  cell = sub.add_parser("train")
  cell.add_argument("--cell", required=True, choices=table1.CELLS)
  cell.add_argument("--workdir", required=True)
  cell.add_argument("--manual_dir", default=None)
  cell.add_argument("--short", action="store_true")
  cell.add_argument("--iw_samples", type=int, default=5_000)
  cell.add_argument("--num_examples", type=int, default=None, help="Default: all 10,000.")
  cell.add_argument("--epochs", type=int, default=None, help="Stop after the schedule's first N.")
  cell.add_argument("--seed", type=int, default=None, help="config.seed (default: the config's).")
  rep = sub.add_parser("report")
  rep.add_argument("--root", required=True)
  rep.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  rep.add_argument("--name", default="table1")
  return parser


def main() -> None:
  """Parses the command line and runs `train` or `report`."""
  args = parser().parse_args()
  if args.command == "train":
    print(json.dumps(train_cell(args), indent=2))
  else:
    for path in report.write(args.root, args.out, args.name):
      print(f"wrote {path}")


if __name__ == "__main__":
  main()
