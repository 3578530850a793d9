"""The ROC-AUC table of `anomaly --ood_dataset` outputs: one row per JSON summary given.

`python -m experiments.ood_fashion_mnist.table RUN/tools/ood_mnist_elbo.json ...`
"""

import json
import sys


def row(path: str) -> str:
  """One markdown row: file, score, in/OOD means and the three AUCs."""
  with open(path) as f:
    s = json.load(f)
  score = s["score"] + (f" (k={s['iw_samples']})" if s["score"] == "iw_nll" else "")
  return (
    f"| {path} | {score} | {s['mean_score_in']:.1f} | {s['mean_score_ood']:.1f} "
    f"| {s['roc_auc']:.3f} | {s['roc_auc_complexity']:.3f} | {s['roc_auc_complexity_only']:.3f} |"
  )


def main(paths: list[str]) -> None:
  """Prints the table header and one row per summary."""
  print("| summary | score | mean in (nats) | mean OOD (nats) | AUC score | AUC S(x) | AUC -L(x) |")
  print("|---|---|---|---|---|---|---|")
  for path in paths:
    print(row(path))


if __name__ == "__main__":
  main(sys.argv[1:])
