"""The IWAE protocol's training step in vae_jax against a minimal fused JAX loop (same math).

    python -m benchmarks.iwae_protocol [--k=1] [--rounds=5] [--steps=1000] [--manual_dir=DIR]

Both train the one-layer model of `experiments/iwae_table1` (784-200-200-50, tanh, Bernoulli,
dynamic binarization, batch 20, Adam eps 1e-4) on MNIST kept on the device (random images when
`--manual_dir` is not given), `--steps` steps per dispatch in one compiled `lax.scan`. The
minimal loop is the same computation written directly in JAX (`benchmarks.minimal_vae`: no model
classes, no metrics, no shard_map); vae_jax is its trainer (`training.train.SingleRun`) as a run
uses it. Rounds alternate in one process; prints ms per step of each (median of rounds) and
vae_jax's overhead ratio.
"""

import argparse
import time

import jax
import numpy as np

from benchmarks import minimal_vae
from experiments.iwae_table1 import config as table1


def images(manual_dir: str | None) -> np.ndarray:
  """MNIST training images from `manual_dir`, or random uint8 images of MNIST's shape."""
  if manual_dir:
    from benchmarks.mnist_idx import mnist_dataset

    config = table1.get_config()
    config.data.manual_dir = manual_dir
    return mnist_dataset(config.data).train_images
  return np.random.default_rng(0).integers(0, 256, (60_000, 28, 28, 1), np.uint8)


def minimal_loop(images: np.ndarray, k: int, steps: int):
  """A jitted `(state, start) -> state` running `steps` batch-20 steps of the protocol."""
  return minimal_vae.minimal_loop(images, steps, (200, 200), 50, 20, "tanh", k, True, 1e-4)


def vae_jax_program(images: np.ndarray, k: int, steps: int):
  """The trainer a run of the protocol uses, on the same images."""
  import tempfile

  from vae_jax import configuration
  from vae_jax.data import ArrayDataset
  from vae_jax.training import mesh as meshes
  from vae_jax.training import train

  config = table1.get_config()
  config.update_from_flattened_dict(table1.cell_overrides(f"vae1_k{k}"))
  config.steps_per_execution = steps
  configuration.resolve(config)
  labels = np.zeros(len(images), np.int32)
  dataset = ArrayDataset(images, labels, images[:100], labels[:100], 10)
  workdir = tempfile.mkdtemp(prefix="iwae_protocol_")
  return train.SingleRun(config, workdir, dataset, meshes.make_mesh(), 10**9)


def measure(images: np.ndarray, k: int = 1, steps: int = 1000, rounds: int = 5) -> dict:
  """Median ms per step of the minimal loop and of vae_jax's trainer, in alternating rounds."""
  run, state = minimal_loop(images, k, steps)
  program = vae_jax_program(images, k, steps)
  state = jax.block_until_ready(run(state, 0))
  program.train(0, steps)
  program.block()
  times = {"minimal": [], "vae_jax": []}
  done = steps
  for r in range(rounds):
    for name in ("minimal", "vae_jax") if r % 2 == 0 else ("vae_jax", "minimal"):
      start = time.perf_counter()
      if name == "minimal":
        state = jax.block_until_ready(run(state, done))
      else:
        program.train(done, done + steps)
        program.block()
      times[name].append((time.perf_counter() - start) / steps * 1e3)
    done += steps
  med = {name: float(np.median(t)) for name, t in times.items()}
  return {
    "k": k,
    "steps_per_dispatch": steps,
    "minimal_ms_per_step": med["minimal"],
    "vae_jax_ms_per_step": med["vae_jax"],
    "rounds_ms": times,
    "overhead_ratio": med["vae_jax"] / med["minimal"],
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--k", type=int, default=1)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--manual_dir", default=None)
  args = parser.parse_args()
  result = measure(images(args.manual_dir), args.k, args.steps, args.rounds)
  print(f"IWAE protocol, k={args.k}, batch 20, {args.steps} steps per dispatch, {jax.devices()}")
  for name in ("minimal", "vae_jax"):
    rounds = [round(v, 3) for v in result["rounds_ms"][name]]
    print(f"{name:<8} median {result[name + '_ms_per_step']:.3f} ms/step  rounds {rounds}")
  print(f"vae_jax / minimal: {result['overhead_ratio']:.3f}x the time per step")


if __name__ == "__main__":
  main()
