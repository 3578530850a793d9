"""The beta4 conv train step: stride-1 'phase' convolutions vs XLA's, vs PyTorch, in one process.

    python -m benchmarks.conv_step [--rounds=10] [--steps=5]

Times (a) the train step as the trainer runs it (`steps.make_dispatch_steps`: the config's
`steps_per_execution` steps per compiled loop) with the conv bodies' `conv_impl='phase'` (what
'auto' picks on CPU), (b) the same step with `conv_impl='xla'` (on CPU one step per dispatch,
its fastest: XLA's convolutions run slowly inside a loop there), and (c) the same architecture
in PyTorch (eager, default threads): four 4x4 stride-2 convs of 32 channels with padding 1,
dense 256-256, a 10-d Gaussian latent, the mirrored decoder with transposed convs, Bernoulli
likelihood (BCE with logits summed per image, batch mean), KL weighted by beta, Adam (on the GPU
where PyTorch sees one). On an accelerator (d) is the XLA step with `config.dtype='bfloat16'`.
The batch (64 images) stays in memory. Rounds alternate the variants in random order so that load
on a shared machine hits all alike; prints the median ms per step and the ratios.
"""

import argparse
import contextlib
import random
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import beta4
from vae_jax.data.spec import DataSpec
from vae_jax.models import build_model
from vae_jax.training import mesh as meshes
from vae_jax.training import optimizer, steps
from vae_jax.training.keys import run_keys
from vae_jax.training.state import init_state

SHAPE = (64, 64, 1)


def _with_conv_impl(model, impl: str):
  return model.clone(
    encoder=model.encoder.clone(conv_impl=impl), decoder=model.decoder.clone(conv_impl=impl)
  )


def jax_step(config, impl: str, images: np.ndarray):
  """`(run, k)`: a zero-argument callable running k vae_jax train steps with `conv_impl=impl`.

  The steps run as the trainer dispatches them: `config.steps_per_execution` = k steps in one
  compiled loop (`steps.make_dispatch_steps`), metric sums on the device; the batch is the same
  at every step.
  """
  spec = DataSpec(SHAPE, 0, 60_000)
  model = _with_conv_impl(build_model(config.model, spec), impl)
  tx, _ = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  mesh = meshes.make_mesh()
  keys = run_keys(config.seed)
  k = config.steps_per_execution
  batch = jax.device_put({"image": images}, meshes.batch_sharded(mesh))
  stacked = jax.device_put(
    {"image": np.stack([images] * k)}, NamedSharding(mesh, P(None, meshes.DATA_AXIS))
  )
  single, multi = steps.make_dispatch_steps(model, tx, config, mesh)
  init = jax.jit(lambda r: init_state(model, tx, r, spec), out_shardings=meshes.replicated(mesh))
  state = init(keys["init"])  # Placed as the step returns it: no second compilation.
  one_step = steps.global_step(model, tx, config, mesh)
  sums = steps.zero_metrics(one_step, state, {}, batch, keys["train"], meshes.replicated(mesh))
  box = [state, sums]

  def run():
    step, inputs = (multi, stacked) if k > 1 else (single, batch)
    box[0], box[1], loss = step(box[0], {}, inputs, keys["train"], box[1])
    return loss

  jax.block_until_ready(run())
  return run, k


def torch_step(config, images: np.ndarray):
  """A zero-argument callable running one PyTorch train step of the same architecture."""
  import torch
  from torch import nn
  from torch.nn import functional as F

  torch.manual_seed(0)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  c, k, z = 32, config.model.conv_kernel_size, config.model.latent_dim

  def down(cin):
    return [nn.Conv2d(cin, c, k, 2, 1), nn.ReLU()]

  def up(cout, relu=True):
    return [nn.ConvTranspose2d(c, cout, k, 2, 1)] + ([nn.ReLU()] if relu else [])

  encoder = nn.Sequential(
    *down(1), *down(c), *down(c), *down(c), nn.Flatten(),
    nn.Linear(c * 16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2 * z),
  )  # fmt: skip
  decoder = nn.Sequential(
    nn.Linear(z, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, c * 16),
    nn.ReLU(), nn.Unflatten(1, (c, 4, 4)), *up(c), *up(c), *up(c), *up(1, relu=False),
  )  # fmt: skip
  encoder, decoder = encoder.to(device), decoder.to(device)
  params = [*encoder.parameters(), *decoder.parameters()]
  opt = torch.optim.Adam(params, lr=config.optimizer.learning_rate)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0).to(device)
  beta = config.objective.beta

  def run():
    opt.zero_grad()
    mu, logvar = encoder(x).chunk(2, dim=1)
    zs = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    logits = decoder(zs)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    loss = rec + beta * kl
    loss.backward()
    opt.step()
    return loss.detach()

  run()
  return run, 1


def _wait(out) -> None:
  """Blocks until `out` (a JAX array, or a PyTorch tensor) has been computed."""
  if isinstance(out, jax.Array):
    jax.block_until_ready(out)
  else:
    out.item()


def measure(rounds: int = 10, steps_per_round: int = 5) -> dict:
  """Median ms per step of the variants that apply here (PyTorch where installed)."""
  config = beta4.get_config()
  rng = np.random.default_rng(0)
  images = (rng.random((config.data.batch_size, *SHAPE)) < 0.1).astype(np.uint8) * 255
  xla = beta4.get_config()
  if jax.default_backend() == "cpu":
    # XLA:CPU runs its own convolutions inside a loop ~25x slower than one step per
    # dispatch (5.5 s vs 0.23 s per beta4 step on 2 cores, 2026-12-07): time it at its best.
    xla.steps_per_execution = 1
  variants = {"phase": jax_step(config, "phase", images), "xla": jax_step(xla, "xla", images)}
  if jax.default_backend() != "cpu":
    bf16 = beta4.get_config()
    bf16.dtype = "bfloat16"
    variants["xla_bf16"] = jax_step(bf16, "xla", images)
  with contextlib.suppress(ImportError):  # PyTorch is optional (not on every GPU host).
    variants["torch"] = torch_step(config, images)
  times = {name: [] for name in variants}
  for _ in range(rounds):
    for name in random.sample(list(variants), len(variants)):
      run, k = variants[name]
      start = time.perf_counter()
      for _ in range(steps_per_round):
        out = run()
      _wait(out)
      times[name].append((time.perf_counter() - start) / (steps_per_round * k) * 1e3)
  result = {f"{name}_ms": float(np.median(t)) for name, t in times.items()}
  result.update({f"{name}_min_ms": float(min(t)) for name, t in times.items()})
  # What a run uses: conv_impl='auto' picks the phase convs on CPU and XLA's elsewhere.
  result["vae_jax_ms"] = result["phase_ms" if jax.default_backend() == "cpu" else "xla_ms"]
  result["batch_size"] = config.data.batch_size
  result["steps_per_execution"] = config.steps_per_execution
  return result


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--steps", type=int, default=5, help="steps per round and variant")
  args = parser.parse_args()
  r = measure(args.rounds, args.steps)
  print(
    f"beta4 train step, batch {r['batch_size']}, backend {jax.default_backend()}, "
    f"{args.rounds} rounds x {args.steps} steps"
  )
  for name in ("phase", "xla", "xla_bf16", "torch"):
    if f"{name}_ms" in r:
      print(f"{name:<6} median {r[name + '_ms']:8.2f} ms  min {r[name + '_min_ms']:8.2f} ms")
  print(f"phase over xla: {r['xla_ms'] / r['phase_ms']:.2f}x")
  if "torch_ms" in r:
    print(f"phase over pytorch: {r['torch_ms'] / r['phase_ms']:.2f}x")


if __name__ == "__main__":
  main()
