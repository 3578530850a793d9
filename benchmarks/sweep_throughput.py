"""A vectorized sweep against the same members trained one after the other, in one run.

    python -m benchmarks.sweep_throughput --steps=200

Members: beta in {1, 2, 4, 8} x seeds {0, 1} (8 members) on `configs/beta4.py` (procedural
dSprites, conv beta-VAE, batch 64) or `--config=configs/mnist_mlp.py` (needs `--manual_dir`).
Both ways run the real trainers (`vectorized.train_members` and `train.train_and_evaluate`) with
checkpoints, TensorBoard events and a final evaluation on a small test split. Prints the sweep's
training throughput (examples/s over all members: the sum of the simultaneous members' rates, or
the mean rate of members trained one at a time; training only, as in results.json: compilation
included), the same after the first evaluation interval (compilation excluded), the same per
member, the total wall time (compilation, evaluation and checkpoints included) and their ratios,
plus the largest difference between the two ways' final eval losses.
"""

import argparse
import importlib
import json
import tempfile
import time

import jax

BETAS, SEEDS = (1.0, 2.0, 4.0, 8.0), (0, 1)


def member_configs(config_module: str, steps: int, manual_dir: str | None) -> list:
  """The 8 members' configs, of `steps` steps, evaluated and checkpointed halfway and at the end.

  The halfway evaluation splits each run's training time into the first interval (which holds the
  compilation) and the steady rest (`train_steady_examples_per_sec` in results.json).
  """
  module = importlib.import_module(config_module.removesuffix(".py").replace("/", "."))
  configs = []
  for beta in BETAS:
    for seed in SEEDS:
      config = module.get_config()
      config.objective.beta, config.seed = beta, seed
      config.num_train_steps = steps
      config.log_every_steps = min(config.log_every_steps, steps)
      # Halfway, rounded up to whole dispatches (no step runs outside the K-step program).
      k = config.steps_per_execution
      config.eval_every_steps = config.checkpoint_every_steps = max(-(-(steps // 2) // k) * k, 1)
      config.data.num_eval_examples = 1000
      config.num_traversal_inputs = 1
      if manual_dir:
        config.data.manual_dir = manual_dir
      configs.append(config)
  return configs


def main() -> None:
  """Runs both ways and prints the figures and ratios as JSON."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--config", default="configs/beta4.py")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--manual_dir", default=None)
  args = parser.parse_args()
  print(json.dumps(measure(args.config, args.steps, args.manual_dir), indent=2))


def measure(config_module: str, steps: int, manual_dir: str | None = None) -> dict:
  """Trains the 8 members vectorized, then one by one; returns throughputs and their ratios."""
  from vae_jax.data import load_dataset
  from vae_jax.training import train, vectorized

  configs = member_configs(config_module, steps, manual_dir)
  dataset = load_dataset(configs[0].data)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    dirs = [f"{tmp}/vectorized/{i}" for i in range(len(configs))]
    vec = vectorized.train_members(configs, dirs, dataset=dataset)
    vec_wall = time.perf_counter() - start
    start = time.perf_counter()
    seq = [
      train.train_and_evaluate(c, f"{tmp}/sequential/{i}", dataset=dataset)
      for i, c in enumerate(configs)
    ]
    seq_wall = time.perf_counter() - start
  # Vectorized members train simultaneously: the sweep's throughput is the sum of their rates.
  # Sequential members train one at a time: the sweep's throughput is their mean rate.
  vec_total = sum(r["train_examples_per_sec"] for r in vec)
  seq_total = sum(r["train_examples_per_sec"] for r in seq) / len(seq)
  vec_steady = sum(r["train_steady_examples_per_sec"] or 0.0 for r in vec)
  seq_steady = sum(r["train_steady_examples_per_sec"] or 0.0 for r in seq) / len(seq)
  return {
    "config": config_module,
    "members": len(configs),
    "steps": steps,
    "devices": jax.device_count(),
    "vectorized_sweep_examples_per_sec": round(vec_total, 1),
    "sequential_sweep_examples_per_sec": round(seq_total, 1),
    "vectorized_examples_per_sec_per_member": round(vec_total / len(vec), 1),
    "sequential_examples_per_sec_per_member_over_the_sweep": round(seq_total / len(seq), 1),
    "training_speed_ratio": round(vec_total / seq_total, 2),
    "vectorized_steady_sweep_examples_per_sec": round(vec_steady, 1),
    "sequential_steady_sweep_examples_per_sec": round(seq_steady, 1),
    "steady_training_speed_ratio": round(vec_steady / seq_steady, 2) if seq_steady else None,
    "vectorized_total_wall_sec": round(vec_wall, 1),
    "sequential_total_wall_sec": round(seq_wall, 1),
    "total_wall_ratio": round(seq_wall / vec_wall, 2),
    "max_eval_loss_difference": max(
      abs(a["eval_loss"] - b["eval_loss"]) for a, b in zip(vec, seq, strict=True)
    ),
  }


if __name__ == "__main__":
  main()
