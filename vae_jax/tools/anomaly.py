"""Anomaly scores of test examples: -ELBO or the importance-weighted NLL, and a held-out ROC-AUC."""

import dataclasses

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from vae_jax import runs
from vae_jax.tools import common
from vae_jax.tools.common import require

SCORES = ("elbo", "iw_nll")
IW_CHUNK = 25  # Importance samples per jitted call.


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Area under the ROC curve of `scores` separating `positive` examples from the rest."""
  positive = np.asarray(positive, bool)
  require(
    positive.any() and not positive.all(),
    "ROC-AUC needs examples of both groups (held-out and the rest) among those scored.",
  )
  return float(roc_auc_score(positive, np.asarray(scores)))


@dataclasses.dataclass
class AnomalyOptions(common.Options):
  """score: elbo (-ELBO) | iw_nll; heldout: the anomalous class (default the run's exclude_labels).

  iw_samples: importance samples for iw_nll; num: score the first `num` test examples (default all).
  """

  score: str = "elbo"
  heldout: int | None = None
  iw_samples: int = 100
  num: int | None = None


def heldout_classes(run: runs.Run, o: AnomalyOptions) -> tuple[int, ...]:
  """--heldout, else the classes the run was trained without (`data.exclude_labels`)."""
  if o.heldout is not None:
    return (o.heldout,)
  return tuple(int(v) for v in run.config.data.get("exclude_labels", ()))


def check_anomaly(run: runs.Run, o: AnomalyOptions) -> None:
  """Checks anomaly's options against the run."""
  require(o.score in SCORES, f"--score={o.score!r} is not one of {SCORES}.")
  if o.score == "iw_nll":
    common.check_positive(o.iw_samples, "--iw_samples")
    require(
      run.model.capabilities.density,
      f"--score=iw_nll needs a model that reports log q(z|x) and log p(z); "
      f"model.name={run.config.model.name!r} does not. Use --score=elbo.",
    )
  if o.num is not None:
    common.check_positive(o.num, "--num")
  for label in heldout_classes(run, o):
    common.check_class(run, label, "--heldout")


ANOMALY = common.Command("anomaly", AnomalyOptions, check_anomaly, "anomaly")


def scores(run: runs.Run, o: AnomalyOptions, images, labels) -> np.ndarray:
  """Per-example anomaly score in nats: -ELBO or -log mean_s w_s over `iw_samples` samples.

  Example i uses keys fold_in(tool key, i), as the trainer's evaluation does with its own key.
  """
  key = common.tool_key(run, o.seed, f"anomaly_{o.score}")
  inference = common.inference(run)
  if o.score == "elbo":
    return -inference.elbo_terms(images, labels, key)["elbo"]
  return -inference.log_likelihoods(images, labels, key, o.iw_samples, IW_CHUNK)


def _histogram(all_scores: np.ndarray, positive: np.ndarray | None, title: str) -> Figure:
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  bins = np.histogram_bin_edges(all_scores, bins=60)
  if positive is None:
    ax.hist(all_scores, bins=bins, color="tab:blue", alpha=0.8, label=f"all (n={len(all_scores)})")
  else:
    for group, color, name in ((~positive, "tab:blue", "other"), (positive, "tab:red", "held-out")):
      ax.hist(
        all_scores[group],
        bins=bins,
        density=True,
        alpha=0.6,
        color=color,
        label=f"{name} (n={int(group.sum())})",
      )
  ax.set_xlabel("anomaly score (nats)")
  ax.set_ylabel("density" if positive is not None else "count")
  ax.set_title(title)
  ax.legend()
  return fig


def run_anomaly(run: runs.Run, **options) -> dict:
  """Scores test examples; with held-out classes, the ROC-AUC of the score for those vs the rest.

  Writes a histogram PNG of the scores (per group) and a JSON summary.
  """
  o = ANOMALY.parse(run, options)
  images, labels = common.split_arrays(run, "test")
  n = len(images) if o.num is None else min(o.num, len(images))
  images, labels = images[:n], None if labels is None else labels[:n]
  s = np.asarray(scores(run, o, images, labels), np.float64)
  heldout = heldout_classes(run, o)
  name = "-ELBO" if o.score == "elbo" else f"IW-NLL (k={o.iw_samples})"
  summary = {
    "score": o.score,
    "num_examples": n,
    "checkpoint_step": run.step,
    "mean_score": float(s.mean()),
  }
  if o.score == "iw_nll":
    summary["iw_samples"] = o.iw_samples
  positive = None
  if heldout:
    positive = np.isin(labels, heldout)
    auc = roc_auc(s, positive)
    trained_without = tuple(run.config.data.get("exclude_labels", ()))
    summary |= {
      "heldout": list(heldout),
      "trained_without": list(trained_without),
      "roc_auc": auc,
      "mean_score_heldout": float(s[positive].mean()),
      "mean_score_other": float(s[~positive].mean()),
    }
    name += f", held-out {list(heldout)}: ROC-AUC {auc:.3f}"
  with ANOMALY.outputs(run, o) as out:
    out.save_figure(_histogram(s, positive, name))
    out.save_json(summary)
  return {"files": out.files, "summary": summary, "scores": s, "positive": positive}
