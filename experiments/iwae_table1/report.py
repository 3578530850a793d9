"""Collects finished IWAE Table 1 cells into markdown, CSV and a plot beside the paper's values."""

import csv
import glob
import json
import os

from experiments.iwae_table1 import config as table1


def _paper(cell: str) -> float:
  name, _, k = cell.partition("_k")
  objective = "elbo" if name.startswith("vae") else "iwae"
  return table1.PAPER[(objective, int(name[-1]), int(k))]


def collect(root: str) -> list[dict]:
  """Every `table1.json` under `root`, in the paper's row order, with the paper's value."""
  records = []
  for path in glob.glob(os.path.join(root, "*", "table1.json")):
    with open(path) as f:
      record = json.load(f)
    records.append(record | {"paper": _paper(record["cell"])})
  order = {cell: i for i, cell in enumerate(table1.CELLS)}
  return sorted(records, key=lambda r: order[r["cell"]])


def write(root: str, out_dir: str, name: str = "table1") -> list[str]:
  """Writes `<name>.md`, `<name>.csv` and `<name>.png` into `out_dir`; returns their paths."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib.figure import Figure

  records = collect(root)
  if not records:
    raise SystemExit(f"error: no */table1.json under {root}; train cells first")
  paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("md", "csv", "png")]
  columns = ["cell", "test_nll", "test_nll_stderr", "paper", "active_units", "epochs", "step"]
  columns += ["iw_samples", "num_examples", "seed"]
  with open(paths[1], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
  lines = ["| cell | test NLL (nats) | paper | difference | active units | epochs |"]
  lines.append("|---|---|---|---|---|---|")
  for r in records:
    units = "+".join(str(u) for u in r["active_units"])
    lines.append(
      f"| {r['cell']} | {r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} | {r['paper']:.2f} | "
      f"{r['test_nll'] - r['paper']:+.2f} | {units} | {r['epochs']} |"
    )
  with open(paths[0], "w") as f:
    f.write("\n".join(lines) + "\n")
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  for objective, marker in (("vae", "o"), ("iwae", "s")):
    for layers, color in (("1", "tab:blue"), ("2", "tab:orange")):
      rows = [r for r in records if r["cell"].startswith(f"{objective}{layers}_")]
      ks = [int(r["cell"].split("_k")[1]) for r in rows]
      label = f"{objective.upper()}, {layers} layer{'s' if layers == '2' else ''}"
      ax.plot(ks, [r["test_nll"] for r in rows], marker=marker, color=color, label=label)
      ax.plot(ks, [r["paper"] for r in rows], marker=marker, color=color, ls=":", alpha=0.5)
  ax.set_xscale("log")
  ax.set_xlabel("training samples k")
  ax.set_ylabel("test NLL, k = 5,000 (nats)")
  ax.set_title("IWAE Table 1: this run (solid) and the paper (dotted)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths[2], dpi=120)
  return paths
