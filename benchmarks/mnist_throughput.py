"""Training throughput of `configs/mnist_mlp.py` against the seeds' PyTorch reference, one process.

    python -m benchmarks.mnist_throughput --manual_dir=../shared/data/mnist --epochs=10 --repeats=3

Prints, side by side: the input pipeline alone (batches built and placed on the devices), the
whole `vae_jax` run (compile, input pipeline and per-step logging included; evaluation excluded)
with its test -ELBO and its seconds per epoch after the first (compiled), and the PyTorch
reference trained for the same epochs in the same process, both as written (per-image PIL
pipeline) and with an in-memory tensor loader, and the same model as a minimal fused JAX loop
(`run_minimal`: the ceiling of any framework's rate on this machine).

With `--repeats=R` the runs alternate R times (the first in each repeat rotates), each
repeat's speed-ups are taken within that repeat, and the table shows medians: load on a shared
machine drifts over minutes, and alternation lets the drift hit every run alike.
"""

import argparse
import contextlib
import json
import tempfile
import time

import jax
import numpy as np


def input_pipeline_rate(dataset, batch_size: int, seed: int, steps: int = 2000) -> float:
  """Examples/s of building global batches and putting them on the mesh (no training)."""
  from vae_jax.training import mesh as meshes

  stream = dataset.train_stream(batch_size, seed)
  sharding = meshes.batch_sharded(meshes.make_mesh())
  start = time.perf_counter()
  for step in range(steps):
    batch = jax.device_put(stream.batch(step), sharding)
  jax.block_until_ready(batch)
  return steps * batch_size / (time.perf_counter() - start)


def run_vae_jax(manual_dir: str, epochs: int, workdir: str, data_dir: str) -> dict:
  from benchmarks.mnist_idx import mnist_dataset
  from configs import mnist_mlp
  from vae_jax.training import train

  config = mnist_mlp.get_config()
  config.data.manual_dir = manual_dir
  config.data.data_dir = data_dir
  config.num_epochs = epochs
  dataset = mnist_dataset(config.data)
  pipeline = input_pipeline_rate(dataset, config.data.batch_size, config.seed)
  results = train.train_and_evaluate(config, workdir, dataset=dataset)
  steps_per_epoch = len(dataset.train_images) // config.data.batch_size
  steady = results["train_steady_examples_per_sec"]
  return {
    "test_neg_elbo": -results["eval_elbo"],
    "train_examples_per_sec": results["train_examples_per_sec"],
    "epoch_sec": results["train_time_sec"] / epochs,
    # Epochs after the first, whose time holds the compilation.
    "steady_epoch_sec": steps_per_epoch * config.data.batch_size / steady if steady else None,
    "input_pipeline_examples_per_sec": pipeline,
    "steps_per_epoch": steps_per_epoch,
  }


def run_minimal(manual_dir: str, epochs: int) -> dict:
  """The `mnist_mlp` model as a minimal fused JAX loop (`benchmarks.minimal_vae`), epoch by epoch.

  Its sizes, activation, batch, learning rate and targets (grey levels unless `data.binarize` is
  'dynamic') come from `configs/mnist_mlp.py`; the training images live on the device and each
  epoch is one compiled `lax.scan`. Compilation is left out (one warm-up epoch first), so its
  rate is a ceiling for the whole run's: no input pipeline, metrics, logging or checkpoints.
  """
  from benchmarks import minimal_vae
  from benchmarks.mnist_idx import load_mnist
  from configs import mnist_mlp

  config = mnist_mlp.get_config()
  m, batch = config.model, config.data.batch_size
  images = load_mnist(manual_dir)["train_images"]
  steps = len(images) // batch
  run, state = minimal_vae.minimal_loop(
    images,
    steps,
    tuple(m.hidden_sizes),
    m.latent_dim,
    batch,
    m.activation,
    binarize=config.data.binarize == "dynamic",
    adam_eps=config.optimizer.eps,
    learning_rate=config.optimizer.learning_rate,
  )
  state = jax.block_until_ready(run(state, 0))
  start = time.perf_counter()
  for epoch in range(1, epochs + 1):
    state = run(state, epoch * steps)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  return {
    "train_examples_per_sec": epochs * steps * batch / seconds,
    "epoch_sec": seconds / epochs,
    "test_neg_elbo": float("nan"),
  }


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--manual_dir", default="../shared/data/mnist")
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()

  references = ["jax_minimal"] + ([] if args.skip_torch else ["torch_pil", "torch_tensor"])
  runs = measure(args.manual_dir, args.epochs, args.repeats, references)
  _print_table(runs, args.epochs)
  print(json.dumps(runs, default=float))


def measure(
  manual_dir: str, epochs: int, repeats: int = 1, references: tuple = ("torch_tensor",)
) -> dict[str, list[dict]]:
  """Each run's figures per repeat: vae_jax and the `references` that can run here.

  A reference is 'jax_minimal' (`run_minimal`), or 'torch_pil' / 'torch_tensor' (the PyTorch
  reference's two loaders, where torch is installed).
  """
  with contextlib.suppress(ImportError):  # TF reads data only; keep it off the accelerators.
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
  torch_refs = [r for r in references if r.startswith("torch_")]
  names = ["vae_jax"] + [r for r in references if r not in torch_refs]
  names += torch_refs if _have_torch() else []
  runs = {name: [] for name in names}
  with tempfile.TemporaryDirectory() as workdir:
    for repeat in range(repeats):
      for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
        runs[name].append(_run(name, manual_dir, epochs, workdir, repeat))
  return runs


def _have_torch() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def _run(name: str, manual_dir: str, epochs: int, workdir: str, repeat: int) -> dict:
  if name == "vae_jax":
    return run_vae_jax(manual_dir, epochs, f"{workdir}/run{repeat}", f"{workdir}/tfds")
  if name == "jax_minimal":
    return run_minimal(manual_dir, epochs)
  from benchmarks import torch_reference

  return torch_reference.run(manual_dir, epochs, pipeline=name.removeprefix("torch_"))


def _print_table(runs: dict[str, list[dict]], epochs: int) -> None:
  jax_runs = runs["vae_jax"]
  repeats = len(jax_runs)
  print(
    f"\nMNIST VAE 784-400-20, batch 128, {epochs} epoch(s), {jax.device_count()} device(s), "
    f"median of {repeats} alternating repeat(s)"
  )
  pipeline = np.median([r["input_pipeline_examples_per_sec"] for r in jax_runs])
  print(f"input pipeline alone: {pipeline:,.0f} ex/s")
  steady = [r["steady_epoch_sec"] for r in jax_runs if r["steady_epoch_sec"]]
  if steady:
    print(f"vae_jax seconds per epoch after the first (compiled): {np.median(steady):.3f}")
  print(
    f"{'run':<14}{'examples/s':>12}{'epoch s':>10}{'test -ELBO':>12}{'speed-up':>10}  per repeat"
  )
  for name, rs in runs.items():
    ratios = [
      j["train_examples_per_sec"] / r["train_examples_per_sec"]
      for j, r in zip(jax_runs, rs, strict=True)
    ]
    median = {k: np.median([r[k] for r in rs]) for k in ("train_examples_per_sec", "epoch_sec")}
    print(
      f"{name:<14}{median['train_examples_per_sec']:>12,.0f}{median['epoch_sec']:>10.2f}"
      f"{rs[0]['test_neg_elbo']:>12.2f}{np.median(ratios):>9.2f}x  "
      + " ".join(f"{x:.2f}x" for x in ratios)
    )


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
