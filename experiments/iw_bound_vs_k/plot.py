"""Importance-weighted NLL against the number of samples k for trained MNIST runs, one plot.

    python -m experiments.iw_bound_vs_k.plot --runs=runs/mnist_mlp,runs/mnist_iwae \
        --manual_dir=../shared/data/mnist --num_examples=1000 --out=docs/iw_nll_vs_k.png

Every k uses the same examples and keys (sample s of an example is fold_in(key, s)), so the curve
shows the bound tightening, not noise. k = 1 is the single-sample Monte Carlo ELBO.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vae_jax import runs  # noqa: E402
from vae_jax.evaluation import likelihood  # noqa: E402
from vae_jax.training import mesh as meshes  # noqa: E402

KS = (1, 10, 100, 1000)


def curve(workdir: str, manual_dir: str | None, num_examples: int) -> list[float]:
  """IW-NLL in nats for each k in `KS` on the first `num_examples` test images."""
  overrides = {"data.manual_dir": manual_dir} if manual_dir else None
  run = runs.open_run(workdir, overrides=overrides)
  images = run.dataset.test_images[:num_examples]
  labels = None if run.dataset.test_labels is None else run.dataset.test_labels[:num_examples]
  rng = likelihood.evaluation_key(run.config.seed)
  mesh = meshes.make_mesh()
  log_p = [
    likelihood.log_likelihoods(
      run.model,
      run.model_vars,
      images,
      labels,
      run.config,
      mesh,
      rng,
      num_samples=k,
      chunk=min(k, 100),
      batch_size=100,
    )
    for k in KS
  ]
  return [float(-np.mean(v)) for v in log_p]


def main() -> None:
  """Computes the curves, prints them as JSON and saves the plot."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runs", required=True, help="Comma-separated run directories.")
  parser.add_argument("--manual_dir", default=None)
  parser.add_argument("--num_examples", type=int, default=1000)
  parser.add_argument("--out", default="docs/iw_nll_vs_k.png")
  args = parser.parse_args()
  curves = {
    os.path.basename(w.rstrip("/")): curve(w, args.manual_dir, args.num_examples)
    for w in args.runs.split(",")
  }
  print(json.dumps({"k": KS, **curves}, indent=2))
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, values in curves.items():
    ax.plot(KS, values, marker="o", label=name)
  ax.set_xscale("log")
  ax.set_xlabel("importance samples k")
  ax.set_ylabel("test NLL estimate (nats)")
  ax.set_title(f"IW-NLL vs k, first {args.num_examples} MNIST test images")
  ax.legend()
  fig.tight_layout()
  fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
  main()
