"""Training throughput of `configs/mnist_mlp.py` against the seeds' PyTorch reference, one run.

    python -m benchmarks.mnist_throughput --manual_dir=../shared/data/mnist --epochs=10

Prints, side by side: the input pipeline alone (batches built and placed on the devices), the
whole `vae_jax` run (compile, input pipeline and per-epoch logging included; evaluation excluded)
with its test -ELBO, and the PyTorch reference trained for the same epochs in the same process,
both as written (per-image PIL pipeline) and with an in-memory tensor loader.
"""

import argparse
import json
import tempfile
import time

import jax
import numpy as np


def input_pipeline_rate(dataset, batch_size: int, seed: int, steps: int = 2000) -> float:
  """Examples/s of building global batches and putting them on the mesh (no training)."""
  from vae_jax import parallel

  stream = dataset.train_stream(batch_size, seed)
  sharding = parallel.batch_sharded(parallel.make_mesh())
  start = time.perf_counter()
  for step in range(steps):
    batch = jax.device_put(stream.batch(step), sharding)
  jax.block_until_ready(batch)
  return steps * batch_size / (time.perf_counter() - start)


def run_vae_jax(manual_dir: str, epochs: int, workdir: str) -> dict:
  from configs import mnist_mlp
  from vae_jax import train
  from vae_jax.data import load_dataset

  config = mnist_mlp.get_config()
  config.data.manual_dir = manual_dir
  config.data.data_dir = f"{workdir}/tfds"
  config.num_epochs = epochs
  dataset = load_dataset(config.data)
  pipeline = input_pipeline_rate(dataset, config.data.batch_size, config.seed)
  results = train.train_and_evaluate(config, f"{workdir}/run", dataset=dataset)
  steps_per_epoch = len(dataset.train_images) // config.data.batch_size
  return {
    "test_neg_elbo": -results["eval_elbo"],
    "train_examples_per_sec": results["train_examples_per_sec"],
    "epoch_sec": results["train_time_sec"] / epochs,
    "input_pipeline_examples_per_sec": pipeline,
    "steps_per_epoch": steps_per_epoch,
  }


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--manual_dir", default="../shared/data/mnist")
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()

  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  rows = {}
  with tempfile.TemporaryDirectory() as workdir:
    rows["vae_jax"] = run_vae_jax(args.manual_dir, args.epochs, workdir)
  try:
    import torch  # noqa: F401

    have_torch = not args.skip_torch
  except ImportError:
    have_torch = False
  if have_torch:
    from benchmarks import torch_reference

    for pipeline in ("pil", "tensor"):
      rows[f"torch_{pipeline}"] = torch_reference.run(
        args.manual_dir, args.epochs, pipeline=pipeline
      )

  print(
    f"\nMNIST VAE 784-400-20, batch 128, {args.epochs} epoch(s), {jax.device_count()} device(s)"
  )
  print(f"input pipeline alone: {rows['vae_jax']['input_pipeline_examples_per_sec']:,.0f} ex/s")
  print(f"{'run':<14}{'examples/s':>12}{'epoch s':>10}{'test -ELBO':>12}{'speed-up':>10}")
  jax_rate = rows["vae_jax"]["train_examples_per_sec"]
  for name, r in rows.items():
    ratio = jax_rate / r["train_examples_per_sec"]
    print(
      f"{name:<14}{r['train_examples_per_sec']:>12,.0f}{r['epoch_sec']:>10.2f}"
      f"{r['test_neg_elbo']:>12.2f}{ratio:>9.2f}x"
    )
  print(json.dumps(rows, default=float))


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
