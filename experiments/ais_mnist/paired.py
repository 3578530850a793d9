"""AIS against the importance-weighted estimate on the same test images, example by example.

    python -m experiments.ais_mnist.paired --workdir=RUN --manual_dir=../shared/data/mnist

Reads `RUN/eval/ais.json` (per-example AIS log p̂(x)) and `RUN/eval/iw_nll.json`, recomputes the
IW estimates per example with the group's own settings and key (their mean must reproduce
`iw_nll`), and prints and writes `RUN/eval/ais_vs_iw.json`: the mean paired difference
log p̂_AIS(x) - log p̂_IW(x) with its standard error, and the share of images where AIS is higher.
"""

import argparse
import json
import math
import os

import numpy as np

from vae_jax import runs
from vae_jax.evaluation import likelihood
from vae_jax.evaluation.inference import Inference


def _load(workdir: str, group: str) -> dict:
  with open(os.path.join(workdir, "eval", f"{group}.json")) as f:
    return json.load(f)


def paired(workdir: str, manual_dir: str | None) -> dict:
  """The paired comparison of the run's `ais` and `iw_nll` evaluations."""
  ais_record, iw_record = _load(workdir, "ais"), _load(workdir, "iw_nll")
  n = ais_record["num_examples"]
  if iw_record["num_examples"] != n or iw_record["step"] != ais_record["step"]:
    raise SystemExit("ais.json and iw_nll.json must score the same images at the same step.")
  overrides = {"data.manual_dir": manual_dir} if manual_dir else None
  run = runs.open_run(workdir, str(ais_record["step"]), overrides=overrides)
  inference = Inference(run.model, run.model_vars, run.config)
  labels = run.dataset.test_labels
  iw = likelihood.log_likelihoods(
    run.model,
    inference.model_vars,
    run.dataset.test_images[:n],
    inference.labels(None if labels is None else labels[:n]),
    run.config,
    inference.mesh,
    likelihood.evaluation_key(run.config.seed),
    num_samples=iw_record["iw_samples"],
    chunk=iw_record["iw_chunk"],
    batch_size=100,
  )
  diff = np.asarray(ais_record["ais_log_p_per_example"]) - iw
  return {
    "num_examples": n,
    "iw_samples": iw_record["iw_samples"],
    "ais_steps": ais_record["ais_steps"],
    "ais_chains": ais_record["ais_chains"],
    "iw_nll_recomputed": float(-iw.mean()),
    "iw_nll": iw_record["iw_nll"],
    "ais_nll": ais_record["ais_nll"],
    "ais_minus_iw_log_p": float(diff.mean()),
    "ais_minus_iw_stderr": float(diff.std(ddof=1) / math.sqrt(n)),
    "fraction_ais_higher": float(np.mean(diff > 0)),
  }


def main() -> None:
  """Prints and writes the comparison."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--manual_dir", default=None)
  args = parser.parse_args()
  result = paired(args.workdir, args.manual_dir)
  runs.write_json(os.path.join(args.workdir, "eval", "ais_vs_iw.json"), result)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
