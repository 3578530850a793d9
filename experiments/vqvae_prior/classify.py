"""How often an MNIST classifier is confident about a generative run's prior samples.

    python -m experiments.vqvae_prior.classify --manual_dir=/work/shared/data/mnist \
        --runs=RUNS/vqvae,RUNS/vqvae_prior --temperatures=1.0,0.8 --out=RUNS/classify.json

Trains a small CNN (two 3x3 conv layers of 32 and 64 channels with 2x2 max pooling, a 128-unit
dense layer; Adam 1e-3, batch 128) on the MNIST training images for `--epochs` epochs, reports
its test accuracy, then draws `--num_samples` prior samples (decoded means, the run's own
`generate`, keyed as `vae_jax.tools sample` keys them) from each run and reports the share the
classifier labels with a softmax confidence above `--confidence`, with the confident samples'
class counts (a prior that draws one digit well would pass the share but not the counts), at
each of `--temperatures` (the same keys at every temperature). The same share for the run's
reconstructions of the first `--num_samples` test images bounds what its decoder allows. A
VQ-VAE run samples uniform codes and ignores the temperature; a vqvae_prior run samples its
PixelCNN, the logits divided by it. A class-conditional run (`vqvae_cprior`) samples with labels
drawn uniformly from the ten digits (so its samples are those of the unconditional prior
p(c) = mean_y p(c | y)); for it the report adds the share of samples the classifier labels as
their drawn label, and the exact code NLL of the test images under p(c) and under p(c | y) with
their true labels (bits per code). A run trained with `optimizer.ema_decay` is scored with its
parameters' moving average, and with `--last_params` also with its last parameters (a paired
comparison: same run, same keys).

This is an experiment's yardstick, not a library metric: the project's feature network for
sample-quality metrics lives elsewhere.
"""

import argparse
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import runs
from vae_jax.data import load_dataset
from vae_jax.models.vqvae_prior import marginal_nll
from vae_jax.tools import common
from vae_jax.training.keys import run_keys


class Classifier(nn.Module):
  """Images [batch, 28, 28, 1] in [0, 1] -> logits [batch, 10]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # noqa: D102
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int, rng: jax.Array):
  """Classifier parameters after `epochs` passes over uint8 `images` in shuffled batches of 128."""
  model, tx = Classifier(), optax.adam(1e-3)
  params = model.init(jax.random.fold_in(rng, 0), jnp.zeros((1, 28, 28, 1)))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits = model.apply(p, x.astype(jnp.float32) / 255.0)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  n = len(images) // 128 * 128
  for epoch in range(epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, epoch + 1), len(images)))
    for start in range(0, n, 128):
      idx = order[start : start + 128]
      params, opt_state = step(params, opt_state, images[idx], labels[idx])
  return params


def probabilities(params, x: np.ndarray, batch: int = 500) -> np.ndarray:
  """Softmax class probabilities [n, 10] of images x in [0, 1]."""
  fn = jax.jit(lambda p, v: jax.nn.softmax(Classifier().apply(p, v)))
  return np.concatenate(
    [np.asarray(fn(params, jnp.asarray(x[i : i + batch]))) for i in range(0, len(x), batch)]
  )


def sample_labels(run: runs.Run, num: int, seed: int | None) -> np.ndarray | None:
  """Labels uniform over the classes for a conditional run's samples (key: fold_in 1), else None."""
  if not common.is_conditional(run):
    return None
  key = jax.random.fold_in(common.tool_key(run, seed, "sample"), 1)
  return np.asarray(jax.random.randint(key, (num,), 0, run.dataset.num_classes))


def prior_samples(run: runs.Run, num: int, seed: int | None, temperature: float, labels=None):
  """`num` decoded prior samples of the run, keyed as `vae_jax.tools sample --seed` keys them."""
  key = common.tool_key(run, seed, "sample")
  return common.inference(run).prior_samples(key, num, labels, temperature=temperature)


def confident(probs: np.ndarray, threshold: float, labels: np.ndarray | None = None) -> dict:
  """Share of rows whose top probability exceeds `threshold`, and those rows' class counts.

  With the labels the samples were drawn for, also the share labelled as drawn (confident or not)
  and the share both confident and labelled as drawn.
  """
  top = probs.max(axis=1) > threshold
  counts = np.bincount(probs.argmax(axis=1)[top], minlength=10)
  report = {"confident_share": float(top.mean()), "confident_class_counts": counts.tolist()}
  if labels is not None:
    agree = probs.argmax(axis=1) == labels
    report["label_agreement"] = float(agree.mean())
    report["confident_and_agreeing_share"] = float((agree & top).mean())
  return report


def code_bits(run: runs.Run, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> dict:
  """A conditional prior's code NLL of `images` [n] (bits per code) under p(c) and p(c | y)."""
  model, model_vars = run.model, run.model_vars

  @jax.jit
  def nats(x, y):
    per_class = model.apply(model_vars, x, method=model.class_code_nll)
    return marginal_nll(per_class), jnp.take_along_axis(per_class, y[None], axis=0)[0]

  parts = [
    nats(jnp.asarray(images[i : i + batch], jnp.float32) / 255.0, labels[i : i + batch])
    for i in range(0, len(images), batch)
  ]
  per_bit = math.log(2.0) * model.vqvae.module.num_latents
  bits = [float(np.concatenate(p).mean()) / per_bit for p in zip(*parts, strict=True)]
  return {"test_code_bits_marginal": bits[0], "test_code_bits_given_label": bits[1]}


def score_run(run: runs.Run, params, data, args, averaged: bool = True) -> dict:
  """`confident` of the run's test reconstructions and of its prior samples at each temperature."""
  run = common.restore_run(run, averaged)
  inputs = data.test_images[: args.num_samples].astype(np.float32) / 255.0
  recon = common.inference(run).reconstruct(inputs)
  report = {"test_reconstructions": confident(probabilities(params, recon), args.confidence)}
  labels = sample_labels(run, args.num_samples, args.seed)
  for t in args.temperatures.split(","):
    samples = prior_samples(run, args.num_samples, args.seed, float(t), labels)
    probs = probabilities(params, samples)
    report[f"temperature_{t}"] = confident(probs, args.confidence, labels)
  if labels is not None:
    report.update(code_bits(run, data.test_images, data.test_labels))
  return report


def main() -> None:
  """Trains the classifier, scores each run's samples, prints and writes the JSON."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runs", required=True, help="Comma-separated run directories.")
  parser.add_argument("--manual_dir", default=None, help="Where the raw MNIST files are.")
  parser.add_argument("--num_samples", type=int, default=1000)
  parser.add_argument("--confidence", type=float, default=0.9)
  parser.add_argument(
    "--temperatures", default="1.0", help="Comma-separated sampling temperatures."
  )
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0, help="Classifier seed (and sample seed).")
  parser.add_argument(
    "--last_params", action="store_true", help="Also score averaged runs' last parameters."
  )
  parser.add_argument("--out", default=None, help="Where to write the JSON (also printed).")
  args = parser.parse_args()

  data_config = runs.load_config(args.runs.split(",")[0]).data
  data_config.manual_dir = args.manual_dir
  data = load_dataset(data_config)
  rng = run_keys(args.seed)["init"]
  params = train_classifier(data.train_images, data.train_labels, args.epochs, rng)
  test_probs = probabilities(params, data.test_images.astype(np.float32) / 255.0)
  report = {
    "classifier_test_accuracy": float((test_probs.argmax(1) == data.test_labels).mean()),
    "mnist_test_images": confident(test_probs, args.confidence),
    "num_samples": args.num_samples,
    "confidence": args.confidence,
    "runs": {},
  }
  overrides = {"data.manual_dir": args.manual_dir} if args.manual_dir else None
  for workdir in args.runs.split(","):
    run = common.open_run(workdir, overrides=overrides, restore=False)
    report["runs"][workdir] = score_run(run, params, data, args)
    averaged = run.config.optimizer.get("ema_decay", 0.0) > 0
    if averaged and args.last_params:
      report["runs"][workdir + ":last_params"] = score_run(run, params, data, args, False)
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    runs.write_json(args.out, report)


if __name__ == "__main__":
  main()
