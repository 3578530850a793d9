"""The benchmark suite: every speed figure the README quotes, side by side, in one process.

    python -m benchmarks.run --manual_dir=../shared/data/mnist [--quick] [--only=mnist,iwae]
        [--out=bench.json]

Sections (each a ratio measured within this run, so machine load hits both sides alike):

* `mnist`: the whole `configs/mnist_mlp.py` run (compile, input pipeline and logging included,
  evaluation excluded) against the seeds' PyTorch VAE with an in-memory loader
  (`benchmarks.mnist_throughput`), median of alternating repeats; also seconds per epoch, with
  and without the first epoch (which holds the compilation), and the same model as a minimal
  fused JAX loop against the same PyTorch runs (the ceiling of vae_jax's ratio on the machine).
* `beta4`: the `configs/beta4.py` train step, dispatched as the trainer does (the config's
  `steps_per_execution` steps per compiled loop), against PyTorch with the same architecture
  (`benchmarks.conv_step`).
* `iwae`: the IWAE protocol's step (`experiments/iwae_table1`, batch 20) in vae_jax's trainer
  against a minimal fused JAX loop of the same math (`benchmarks.iwae_protocol`), and what a
  9.84 M-step cell takes at that speed.
* `sweep`: an 8-member vectorized `beta4` sweep against the same members one by one
  (`benchmarks.sweep_throughput`): training rates as results.json gives them (compilation
  included, which short runs are dominated by) and after the first evaluation (compiled).

Prints a markdown table (paste it into README) and writes every raw figure to `--out`. PyTorch
rows are skipped where torch is not installed. `--quick` shortens every section; no section
downloads anything. On one H200 (2026-12-04) the full `mnist,beta4,iwae` sections took 136 s and
`--only=sweep --quick` 132 s, most of it compilation. Without `tensorflow_datasets`, MNIST is read
from the IDX files in `--manual_dir` (`benchmarks.mnist_idx.mnist_dataset`).
"""

import argparse
import json
import time

import jax
import numpy as np

IWAE_CELL_STEPS = 9_840_000
SECTIONS = ("mnist", "beta4", "iwae", "sweep")


def mnist(args) -> list[dict]:
  """vae_jax against PyTorch (in-memory loader) on the whole mnist_mlp run."""
  from benchmarks import mnist_throughput

  epochs, repeats = (1, 1) if args.quick else (10, 2)
  runs = mnist_throughput.measure(args.manual_dir, epochs, repeats, ("jax_minimal", "torch_tensor"))
  rows = [
    _row(
      f"mnist_mlp {epochs}-epoch run, seconds per epoch (compilation included)",
      np.median([r["epoch_sec"] for r in runs["vae_jax"]]),
      None,
      "s",
    )
  ]
  steady = [r["steady_epoch_sec"] for r in runs["vae_jax"] if r["steady_epoch_sec"]]
  if steady:
    rows.append(
      _row(
        "mnist_mlp seconds per epoch after the first (compiled)",
        float(np.median(steady)),
        None,
        "s",
        target="<= 0.1 s on one H200",
      )
    )
  label = f"mnist_mlp {epochs}-epoch run, examples/s"
  rows.append(_rate_row(runs, "vae_jax", label, ">= 2.5x on the 2-core CPU (speed ratio)"))
  rows.append(
    _rate_row(
      runs,
      "jax_minimal",
      "mnist_mlp as a minimal fused JAX loop (compile excluded), ex/s",
      "the ceiling of the 2.5x row",
    )
  )
  return rows


def _rate_row(runs: dict[str, list[dict]], name: str, label: str, target: str) -> dict:
  """`name`'s median examples/s; with PyTorch's in-memory runs, the median per-repeat ratio."""
  rate = np.median([r["train_examples_per_sec"] for r in runs[name]])
  if "torch_tensor" not in runs:
    return _row(label, rate, None, "ex/s")
  ratios = [
    m["train_examples_per_sec"] / t["train_examples_per_sec"]
    for m, t in zip(runs[name], runs["torch_tensor"], strict=True)
  ]
  torch_rate = np.median([r["train_examples_per_sec"] for r in runs["torch_tensor"]])
  return _row(
    f"{label} vs PyTorch in-memory",
    rate,
    torch_rate,
    "ex/s",
    ratio=float(np.median(ratios)),
    target=target,
  )


def beta4(args) -> list[dict]:
  """The beta4 conv train step against PyTorch with the same architecture."""
  from benchmarks import conv_step

  per_round = 5 if jax.default_backend() == "cpu" else 50  # A GPU step takes milliseconds.
  result = conv_step.measure(rounds=3 if args.quick else 10, steps_per_round=per_round)
  step = f"beta4 train step (batch 64, {result['steps_per_execution']} per dispatch)"
  rows = [
    _row(
      f"{step}, ms vs the same step with XLA's default convs",
      result["vae_jax_ms"],
      result["xla_ms"],
      "ms",
      ratio=result["xla_ms"] / result["vae_jax_ms"],
    )
  ]
  if "xla_bf16_ms" in result:
    rows.append(
      _row(
        f"{step}, ms with config.dtype='bfloat16' vs float32",
        result["xla_bf16_ms"],
        result["xla_ms"],
        "ms",
        ratio=result["xla_ms"] / result["xla_bf16_ms"],
      )
    )
  if "torch_ms" in result:
    rows.append(
      _row(
        f"{step}, ms vs PyTorch (same architecture)",
        result["vae_jax_ms"],
        result["torch_ms"],
        "ms",
        ratio=result["torch_ms"] / result["vae_jax_ms"],
        target=">= 1.5x on the 2-core CPU (speed ratio)",
      )
    )
  return rows


def iwae(args) -> list[dict]:
  """The IWAE protocol step against a minimal fused JAX loop, and a full cell's duration."""
  from benchmarks import iwae_protocol

  steps, rounds = (500, 3) if args.quick else (1000, 5)
  result = iwae_protocol.measure(iwae_protocol.images(args.manual_dir), 1, steps, rounds)
  cell_min = result["vae_jax_ms_per_step"] * IWAE_CELL_STEPS / 60e3
  return [
    _row(
      "IWAE protocol step (k=1, batch 20), ms vs minimal fused JAX loop",
      result["vae_jax_ms_per_step"],
      result["minimal_ms_per_step"],
      "ms",
      ratio=result["overhead_ratio"],
      target="<= 1.25x (time ratio)",
    ),
    _row(
      "IWAE k=1 cell (9.84 M steps) at that speed, minutes",
      cell_min,
      None,
      "min",
      target="<= 10 min on one H200",
    ),
  ]


def sweep(args) -> list[dict]:
  """An 8-member vectorized beta4 sweep against the members one by one (compiling in and out)."""
  from benchmarks import sweep_throughput

  result = sweep_throughput.measure("configs/beta4.py", 20 if args.quick else 100)
  return [
    _row(
      f"8-member beta4 sweep ({result['steps']} steps), ex/s vectorized vs one by one",
      result["vectorized_sweep_examples_per_sec"],
      result["sequential_sweep_examples_per_sec"],
      "ex/s",
      ratio=result["training_speed_ratio"],
      target=">= 1.5x",
    ),
    _row(
      "the same sweep after the first evaluation (compiled), ex/s",
      result["vectorized_steady_sweep_examples_per_sec"],
      result["sequential_steady_sweep_examples_per_sec"],
      "ex/s",
      ratio=result["steady_training_speed_ratio"],
    ),
  ]


def _row(name, value, reference, unit, ratio=None, target="") -> dict:
  return {
    "benchmark": name,
    "vae_jax": float(value),
    "reference": None if reference is None else float(reference),
    "unit": unit,
    "ratio": ratio,
    "target": target,
  }


def table(rows: list[dict]) -> str:
  """The rows as a markdown table."""
  lines = [
    "| benchmark | vae_jax | reference | ratio | target |",
    "|---|---|---|---|---|",
  ]
  for r in rows:
    ref = "" if r["reference"] is None else f"{r['reference']:,.2f} {r['unit']}"
    ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
    lines.append(
      f"| {r['benchmark']} | {r['vae_jax']:,.2f} {r['unit']} | {ref} | {ratio} | {r['target']} |"
    )
  return "\n".join(lines)


def main() -> None:
  """Runs the chosen sections and prints their table."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--manual_dir", default="../shared/data/mnist")
  parser.add_argument("--only", default=",".join(SECTIONS))
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  chosen = [s for s in args.only.split(",") if s]
  unknown = sorted(set(chosen) - set(SECTIONS))
  if unknown:
    raise SystemExit(f"error: unknown --only section(s) {unknown}; choose from {list(SECTIONS)}")
  rows, seconds = [], {}
  for name in chosen:
    start = time.perf_counter()
    rows += globals()[name](args)
    seconds[name] = round(time.perf_counter() - start, 1)
  devices = jax.devices()
  backend = jax.default_backend()
  print(f"\n{len(devices)} x {devices[0].device_kind} ({backend}), jax {jax.__version__}")
  print(table(rows))
  print(f"section seconds: {seconds}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"devices": str(devices), "rows": rows, "seconds": seconds}, f, indent=2)


if __name__ == "__main__":
  main()
