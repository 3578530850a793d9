"""Train-step time with XLA's default compiler options against `compile_options.step_options()`.

    python -m benchmarks.step_compile_options [--config=mnist_mlp|beta4] [--rounds=10]

Both steps are compiled in one process and timed in alternating rounds of random order, so drift
in machine load hits both alike; prints the min and median ms per step and the median speed-up.
"""

import argparse
import random
import time

import jax
import numpy as np

from vae_jax.data.spec import DataSpec
from vae_jax.models import build_model
from vae_jax.training import compile_options, optimizer, steps
from vae_jax.training import mesh as meshes
from vae_jax.training.keys import run_keys
from vae_jax.training.state import init_state

SHAPES = {"mnist_mlp": (28, 28, 1), "beta4": (64, 64, 1)}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="mnist_mlp", choices=sorted(SHAPES))
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--steps", type=int, default=0, help="steps per round (default: ~1 s)")
  args = parser.parse_args()
  config = __import__(f"configs.{args.config}", fromlist=["get_config"]).get_config()
  shape = SHAPES[args.config]
  mesh = meshes.make_mesh()
  model = build_model(config.model, DataSpec(shape, 0, 60_000))
  tx, _ = optimizer.make_optimizer(config.optimizer, 10_000)
  keys = run_keys(0)
  images = np.random.default_rng(0).integers(0, 256, (config.data.batch_size, *shape), np.uint8)
  batch = jax.device_put({"image": images}, meshes.batch_sharded(mesh))
  spec = DataSpec(shape, 0, 60_000)
  init = jax.jit(lambda r: init_state(model, tx, r, spec))
  variants = {}
  for name, options in (("xla_default", None), ("step_options", compile_options.step_options())):
    one_step = steps.global_step(model, tx, config, mesh)
    step = jax.jit(
      lambda s, b, r, f=one_step: f(s, {}, b, r), donate_argnums=(0,), compiler_options=options
    )
    state, _ = step(init(keys["init"]), batch, keys["train"])
    variants[name] = [step, jax.block_until_ready(state)]
  n = args.steps or (200 if args.config == "mnist_mlp" else 8)
  times = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name in random.sample(list(variants), len(variants)):
      step, state = variants[name]
      start = time.perf_counter()
      for _ in range(n):
        state, _ = step(state, batch, keys["train"])
      variants[name][1] = jax.block_until_ready(state)
      times[name].append((time.perf_counter() - start) / n)
  print(f"{args.config}, batch {config.data.batch_size}, options {compile_options.step_options()}")
  for name, t in times.items():
    print(f"{name:<14} min {min(t) * 1e3:8.3f} ms  median {np.median(t) * 1e3:8.3f} ms")
  ratio = np.median(times["xla_default"]) / np.median(times["step_options"])
  print(f"speed-up (median): {ratio:.3f}x")


if __name__ == "__main__":
  main()
