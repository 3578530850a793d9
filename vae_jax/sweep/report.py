"""Sweep report: every member's results in one table, means over seeds, and metric plots.

`write_report(workdir)` reads `<workdir>/sweep.json` (written by `python -m vae_jax.sweep run`),
each member's `results.json` (training) and, where present, `eval/results.json`
(`python -m vae_jax.evaluate`), and writes into the workdir:

  report.csv          one row per member: its overrides, then every scalar result
  report.md           mean ± std over seeds for each setting of the other swept keys
  report_recon.png    -eval_recon (reconstruction loss) against the swept key, with std error bars
  report_kl.png       eval_kl likewise
  report_<metric>.png each metric of EVAL_METRICS in eval/results.json (mig, sap, ...) likewise

eval/results.json may be flat (`{"mig": 0.2, ...}`) or grouped by metric group as
`python -m vae_jax.evaluate` writes it (`{"mig": {"step": ..., "mig": 0.2}, "dci": {...}}`).
"""

import csv
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vae_jax.errors import UserError, writing

SEED_KEY = "seed"
SUMMARY_METRICS = ("eval_loss", "eval_elbo", "eval_recon", "eval_kl")
# Evaluation metrics summarised in report.md and plotted, when present; report.csv has them all.
EVAL_METRICS = (
  "mig",
  "beta_vae_accuracy",
  "factor_vae_accuracy",
  "dci_disentanglement",
  "dci_completeness",
  "dci_informativeness",
  "sap",
  "iw_nll",
  "nll_elbo",
  "num_active_units",
  "active_units",
)
# Entries of eval/results.json that describe how a metric was computed, not a result.
EVAL_BOOKKEEPING = frozenset(
  {"step", "checkpoint", "num_examples", "iw_samples", "iw_chunk", "latent_dim", "seed", "scale"}
  | {"active_threshold", "settings"}
)
# Swept keys whose values span orders of magnitude: plotted on a log x axis.
LOG_SCALE_KEYS = ("beta", "learning_rate")


class ReportError(UserError, RuntimeError):
  """The sweep cannot be reported on; the message says why."""


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _hashable(value: Any) -> Any:
  return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


def _is_number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
  return value is None or isinstance(value, int | float | str)


def eval_scalars(results: dict, taken: set[str] | dict) -> dict[str, Any]:
  """The scalar results of an eval/results.json, flat or grouped by metric group.

  Args:
    results: the file's contents.
    taken: column names already in use; a result with such a name is prefixed with its group
      (`evaluate.` for a flat file).

  Returns:
    {column: value}, bookkeeping entries (step, seed, settings, ...) left out.
  """
  items = []
  for key, value in results.items():
    if isinstance(value, dict):
      items += [(key, k, v) for k, v in value.items()]
    else:
      items.append(("evaluate", key, value))
  out: dict[str, Any] = {}
  for group, key, value in items:
    if key not in EVAL_BOOKKEEPING and _is_scalar(value):
      out[key if key not in taken and key not in out else f"{group}.{key}"] = value
  return out


def collect(workdir: str) -> tuple[dict, list[str], list[dict], list[str]]:
  """Reads the sweep plan and every member's results.

  Returns:
    The sweep.json record; the override keys in sweep order; one row per member with results
    (`name`, its overrides, then its metrics); and the columns that came from eval/results.json
    (see `eval_scalars`).

  Raises:
    ReportError: the workdir or its sweep.json is missing, or no member has results.
  """
  if not os.path.isdir(workdir):
    raise ReportError(f"workdir {workdir} does not exist")
  sweep = _read_json(os.path.join(workdir, "sweep.json"))
  if sweep is None:
    raise ReportError(
      f"{workdir} has no readable sweep.json; `python -m vae_jax.sweep run` writes it"
    )
  keys = list(dict.fromkeys(k for m in sweep["members"] for k in m["overrides"]))
  rows, eval_keys = [], {}
  for member in sweep["members"]:
    member_dir = os.path.join(workdir, member["name"])
    results = _read_json(os.path.join(member_dir, "results.json"))
    if results is None:
      continue
    row = {"name": member["name"], **{k: _hashable(v) for k, v in member["overrides"].items()}}
    row |= {k: v for k, v in results.items() if _is_scalar(v)}
    evaluation = _read_json(os.path.join(member_dir, "eval", "results.json")) or {}
    evaluation = eval_scalars(evaluation, row)
    row |= evaluation
    eval_keys |= dict.fromkeys(evaluation)
    rows.append(row)
  if not rows:
    raise ReportError(
      f"none of the {len(sweep['members'])} members in {workdir} has a results.json yet"
    )
  return sweep, keys, rows, list(eval_keys)


def _group(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
  """Rows by their values of `keys`, in order of first appearance."""
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
  return groups


def _mean_std(rows: list[dict], metric: str) -> tuple[float, float, int] | None:
  """Mean, sample std (0 for one value) and count of a metric; None if no row has a number."""
  values = [r[metric] for r in rows if _is_number(r.get(metric))]
  if not values:
    return None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std, len(values)


def _label(keys: Sequence[str], values: Sequence[Any]) -> str:
  return ",".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in zip(keys, values, strict=True))


def _fmt(value: Any) -> str:
  if isinstance(value, tuple):
    return "(" + ", ".join(_fmt(v) for v in value) + ")"
  return f"{value:g}" if isinstance(value, float) else str(value)


def write_csv(path: str, keys: list[str], rows: list[dict]) -> None:
  """One row per member: `name`, the override columns, then every metric in order of appearance."""
  columns = list(dict.fromkeys(["name", *keys, *(k for r in rows for k in r)]))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)


def write_markdown(
  path: str, sweep: dict, keys: list[str], rows: list[dict], metrics: list[str]
) -> None:
  """Mean ± std over seeds of `metrics` for each setting of the non-seed override keys."""
  group_keys = [k for k in keys if k != SEED_KEY]
  names = {r["name"] for r in rows}
  missing = [m["name"] for m in sweep["members"] if m["name"] not in names]
  lines = [
    "# Sweep report",
    "",
    f"Config `{sweep['config']}`"
    + (f" with {', '.join(f'`{o}`' for o in sweep['overrides'])}" if sweep["overrides"] else "")
    + f"; {len(rows)} of {len(sweep['members'])} members have results. Cells are mean ± sample "
    "std over the members of a row (seeds); n counts them.",
    "",
    "| " + " | ".join([*(group_keys or ["members"]), "n", *metrics]) + " |",
    "|" + "---|" * (max(len(group_keys), 1) + 1 + len(metrics)),
  ]
  for values, group in _group(rows, group_keys).items():
    cells = [_fmt(v) for v in values] or ["all"]
    cells.append(str(len(group)))
    for metric in metrics:
      stats = _mean_std(group, metric)
      if stats is None:
        cells.append("")
      else:
        mean, std, n = stats
        cells.append(f"{mean:.4g} ± {std:.2g}" if n > 1 else f"{mean:.4g}")
    lines.append("| " + " | ".join(cells) + " |")
  if missing:
    lines += ["", f"Without results yet: {', '.join(missing)}."]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _x_axis(keys: list[str], rows: list[dict]) -> tuple[str | None, list[str]]:
  """The x-axis key and the keys that tell the plotted lines apart.

  The x axis is the first non-seed key with numeric values; each setting of the other non-seed
  keys is one line. Without a numeric key, x is None and the non-seed keys label categories.
  """
  group_keys = [k for k in keys if k != SEED_KEY]
  for key in group_keys:
    if all(_is_number(r.get(key)) for r in rows):
      return key, [k for k in group_keys if k != key]
  return None, group_keys


def plot_metric(
  path: str, keys: list[str], rows: list[dict], metric: str, ylabel: str, sign: float = 1.0
) -> bool:
  """Plots `sign * metric` (mean ± std over seeds) against the swept key; False if absent."""
  if not any(_is_number(r.get(metric)) for r in rows):
    return False
  x_key, series_keys = _x_axis(keys, rows)
  fig = Figure(figsize=(5.5, 3.8), layout="constrained")
  ax = fig.subplots()
  categories: dict[tuple, int] = {}
  for series, srows in _group(rows, series_keys if x_key else []).items():
    points = []
    for values, xrows in _group(srows, [x_key] if x_key else series_keys).items():
      stats = _mean_std(xrows, metric)
      if stats is not None:
        x = values[0] if x_key else categories.setdefault(values, len(categories))
        points.append((x, sign * stats[0], stats[1]))
    if points:
      xs, ys, errs = zip(*sorted(points), strict=True)
      label = _label(series_keys, series) if x_key and series_keys else None
      ax.errorbar(
        xs, ys, yerr=errs, marker="o", capsize=3, ls="-" if x_key else "none", label=label
      )
  if x_key:
    xs = sorted({r[x_key] for r in rows})
    short = x_key.rsplit(".", 1)[-1]
    if len(xs) > 1 and xs[0] > 0 and (short in LOG_SCALE_KEYS or xs[-1] / xs[0] >= 10):
      ax.set_xscale("log")
    ax.set_xticks(xs, labels=[_fmt(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(x_key)
    if series_keys:
      ax.legend(fontsize="small")
  else:
    labels = [_label(series_keys, v) if series_keys else "all" for v in categories]
    ax.set_xticks(range(len(labels)), labels=labels, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title("mean ± std over seeds", fontsize="medium")
  ax.grid(alpha=0.3)
  fig.savefig(path, dpi=100)
  return True


def write_report(workdir: str) -> list[str]:
  """Writes report.csv, report.md and the plots into `workdir`.

  Returns:
    The written paths.

  Raises:
    ReportError: see `collect`.
  """
  sweep, keys, rows, eval_keys = collect(workdir)
  with writing(f"the sweep report in {workdir}", "The members' runs are unchanged."):
    return _write_report(workdir, sweep, keys, rows, eval_keys)


def _write_report(workdir, sweep, keys, rows, eval_keys) -> list[str]:
  numeric_eval = [
    k for k in EVAL_METRICS if k in eval_keys and any(_is_number(r.get(k)) for r in rows)
  ]
  written = [os.path.join(workdir, "report.csv"), os.path.join(workdir, "report.md")]
  write_csv(written[0], keys, rows)
  summary = [m for m in SUMMARY_METRICS if any(m in r for r in rows)] + numeric_eval
  write_markdown(written[1], sweep, keys, rows, summary)
  plots = [
    ("recon", "eval_recon", "reconstruction loss -E[log p(x|z)] (nats)", -1.0),
    ("kl", "eval_kl", "KL(q(z|x) || p(z)) (nats)", 1.0),
    *((re.sub(r"[^A-Za-z0-9_.-]", "_", k), k, k, 1.0) for k in numeric_eval),
  ]
  for stem, metric, ylabel, sign in plots:
    path = os.path.join(workdir, f"report_{stem}.png")
    if plot_metric(path, keys, rows, metric, ylabel, sign):
      written.append(path)
  return written
