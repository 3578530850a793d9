"""Anomaly scores of test examples: -ELBO or the importance-weighted NLL, and their ROC-AUC.

The anomalous group is a held-out class of the run's test split (`--heldout`, default the classes
the run was trained without) or another dataset's test split (`--ood_dataset`, the literature's
out-of-distribution test, e.g. MNIST for a Fashion-MNIST run). Every AUC is reported twice: for
the score itself and for Serrà et al.'s complexity-corrected S(x) = -log2 p(x) - L(x) (see `ood`).
"""

import dataclasses

import jax
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from vae_jax import runs
from vae_jax.tools import common, ood
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

  iw_samples: importance samples for iw_nll; num: score the first `num` test examples (default all),
  of each dataset with ood_dataset. ood_dataset: score the run's test split (in-distribution)
  against this dataset's test split (out-of-distribution) instead of held-out classes;
  ood_manual_dir: its raw files (TFDS manual_dir).
  """

  score: str = "elbo"
  heldout: int | None = None
  iw_samples: int = 100
  num: int | None = None
  ood_dataset: str | None = None
  ood_manual_dir: str | None = None


def heldout_classes(run: runs.Run, o: AnomalyOptions) -> tuple[int, ...]:
  """--heldout, else the classes the run was trained without (`data.exclude_labels`).

  None with --ood_dataset: the other dataset is the anomalous group.
  """
  if o.ood_dataset:
    return ()
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
  if o.ood_dataset:
    require(o.heldout is None, "--heldout and --ood_dataset exclude each other; give one.")
    require(
      not common.is_conditional(run),
      "--ood_dataset needs an unconditional model: a conditional one scores an image with a "
      "class of the run's dataset, which an out-of-distribution image does not have.",
    )
    ood.test_images(run, o.ood_dataset, o.ood_manual_dir)
  else:
    require(o.ood_manual_dir is None, "--ood_manual_dir needs --ood_dataset.")


ANOMALY = common.Command("anomaly", AnomalyOptions, check_anomaly, "anomaly")


def score_key(run: runs.Run, o: AnomalyOptions, group: str = "") -> jax.Array:
  """The key of a group's scores: the test split's (group '') or the OOD dataset's ('ood')."""
  return common.tool_key(run, o.seed, f"anomaly_{o.score}" + (f"_{group}" if group else ""))


def scores(run: runs.Run, o: AnomalyOptions, images, labels, key: jax.Array) -> np.ndarray:
  """Per-example anomaly score in nats: -ELBO or -log mean_s w_s over `iw_samples` samples.

  Example i uses keys fold_in(key, i), as the trainer's evaluation does with its own key.
  """
  inference = common.inference(run)
  if o.score == "elbo":
    s = -inference.elbo_terms(images, labels, key)["elbo"]
  else:
    s = -inference.log_likelihoods(images, labels, key, o.iw_samples, IW_CHUNK)
  return np.asarray(s, np.float64)


def _histogram(ax, values: np.ndarray, positive: np.ndarray | None, names, xlabel: str) -> None:
  bins = np.histogram_bin_edges(values, bins=60)
  if positive is None:
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8, label=f"all (n={len(values)})")
  else:
    for group, color, name in ((~positive, "tab:blue", names[0]), (positive, "tab:red", names[1])):
      ax.hist(
        values[group],
        bins=bins,
        density=True,
        alpha=0.6,
        color=color,
        label=f"{name} (n={int(group.sum())})",
      )
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density" if positive is not None else "count")
  ax.legend()


def _figure(s, corrected, positive, names, titles) -> Figure:
  fig = Figure(figsize=(12, 4))
  left, right = fig.subplots(1, 2)
  _histogram(left, s, positive, names, "anomaly score (nats)")
  _histogram(right, corrected, positive, names, "S(x) = -log2 p(x) - L(x)  (bits)")
  left.set_title(titles[0])
  right.set_title(titles[1])
  return fig


def _groups(run: runs.Run, o: AnomalyOptions):
  """[(images, labels, key)] of the groups scored, and the anomalous mask (None without one)."""
  images, labels = common.split_arrays(run, "test")
  n = len(images) if o.num is None else min(o.num, len(images))
  groups = [(images[:n], None if labels is None else labels[:n], score_key(run, o))]
  heldout = heldout_classes(run, o)
  if o.ood_dataset:
    other = ood.test_images(run, o.ood_dataset, o.ood_manual_dir)
    other = other[: len(other) if o.num is None else o.num]
    groups.append((other, None, score_key(run, o, "ood")))
    return groups, np.arange(n + len(other)) >= n
  return groups, (np.isin(groups[0][1], heldout) if heldout else None)


def _group_summary(s: np.ndarray, corrected: np.ndarray, bits: np.ndarray, dims: int) -> dict:
  return {
    "mean_score": float(s.mean()),
    "mean_complexity_bits_per_dim": float(bits.mean() / dims),
    "mean_corrected_bits_per_dim": float(corrected.mean() / dims),
  }


def _summary(run, o, s, corrected, bits, positive, dims: int) -> dict:
  """The JSON summary: means over all scored examples and, with two groups, per group and AUCs."""
  summary = {
    "score": o.score,
    "num_examples": int(len(s) if positive is None or not o.ood_dataset else (~positive).sum()),
    "checkpoint_step": run.step,
    "complexity": f"PNG (zlib level {ood.PNG_LEVEL}) of the scored 8-bit image, in bits",
    **_group_summary(s, corrected, bits, dims),
  }
  if o.score == "iw_nll":
    summary["iw_samples"] = o.iw_samples
  if positive is None:
    return summary
  if o.ood_dataset:
    summary |= {"ood_dataset": o.ood_dataset, "num_ood_examples": int(positive.sum())}
    tags = ("in", "ood")
  else:
    trained_without = tuple(run.config.data.get("exclude_labels", ()))
    summary |= {"heldout": list(heldout_classes(run, o)), "trained_without": list(trained_without)}
    tags = ("other", "heldout")
  summary |= {
    "roc_auc": roc_auc(s, positive),
    "roc_auc_complexity": roc_auc(corrected, positive),
    # -L(x) alone, Serrà et al.'s baseline: how much of S's AUC the compressor gives by itself.
    "roc_auc_complexity_only": roc_auc(-bits, positive),
  }
  for tag, mask in zip(tags, (~positive, positive), strict=True):
    for key, value in _group_summary(s[mask], corrected[mask], bits[mask], dims).items():
      summary[f"{key}_{tag}"] = value
  return summary


def run_anomaly(run: runs.Run, **options) -> dict:
  """Scores test examples; with held-out classes or an OOD dataset, the ROC-AUC of the score.

  The anomalous examples (held-out class, or the OOD dataset's) are the positive class: an AUC
  above 0.5 means they score higher (lower likelihood). Every AUC is given for the score and for
  the complexity-corrected S(x). Writes a histogram PNG of both (per group) and a JSON summary.
  """
  o = ANOMALY.parse(run, options)
  groups, positive = _groups(run, o)
  s = np.concatenate([scores(run, o, *group) for group in groups])
  bits = np.concatenate(
    [ood.complexity_bits(ood.scored_images(run.config, images, key)) for images, _, key in groups]
  )
  corrected = ood.corrected_score(s, bits)
  dims = int(np.prod(groups[0][0].shape[1:]))
  summary = _summary(run, o, s, corrected, bits, positive, dims)
  titles = ["-ELBO" if o.score == "elbo" else f"IW-NLL (k={o.iw_samples})", "complexity-corrected"]
  names = ("other", "held-out")
  if o.ood_dataset:
    names = (f"{run.config.data.name} (in)", f"{o.ood_dataset} (OOD)")
  if positive is not None:
    titles[0] += f": ROC-AUC {summary['roc_auc']:.3f}"
    titles[1] += f": ROC-AUC {summary['roc_auc_complexity']:.3f}"
  with ANOMALY.outputs(run, o) as out:
    out.save_figure(_figure(s, corrected, positive, names, titles))
    out.save_json(summary)
  return {
    "files": out.files,
    "summary": summary,
    "scores": s,
    "complexity_bits": bits,
    "corrected": corrected,
    "positive": positive,
  }
