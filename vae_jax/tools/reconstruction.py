"""Tools that pass inputs through the model: reconstruct, denoise and augment."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import runs
from vae_jax.evaluation.images import image_grid
from vae_jax.tools import common
from vae_jax.tools.common import require
from vae_jax.training.keys import index_keys

NOISES = ("gaussian", "salt_pepper")
SPLITS = ("train", "test")


def psnr(clean: np.ndarray, other: np.ndarray, max_value: float = 1.0) -> np.ndarray:
  """Peak signal-to-noise ratio per example in dB: 10 log10(max^2 / MSE over the pixels)."""
  clean, other = np.asarray(clean, np.float64), np.asarray(other, np.float64)
  mse = np.mean(np.square(clean - other).reshape(len(clean), -1), axis=1)
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(max_value**2 / mse)


def corrupt(key: jax.Array, x: jnp.ndarray, noise: str, level: float) -> jnp.ndarray:
  """Noisy copies of images in [0, 1], one key per example.

  'gaussian' adds N(0, level^2) noise and clips to [0, 1]; 'salt_pepper' sets each pixel, with
  probability `level`, to 0 or 1 (equally likely).
  """

  def one(k, xi):
    k_flip, k_value = jax.random.split(k)
    if noise == "gaussian":
      return jnp.clip(xi + level * jax.random.normal(k_flip, xi.shape), 0.0, 1.0)
    flip = jax.random.bernoulli(k_flip, level, xi.shape)
    salt = jax.random.bernoulli(k_value, 0.5, xi.shape).astype(xi.dtype)
    return jnp.where(flip, salt, xi)

  return jax.vmap(one)(key, x)


# reconstruct


@dataclasses.dataclass
class ReconstructOptions(common.Options):
  """num: the first `num` test examples."""

  num: int = 16


def check_reconstruct(run: runs.Run, o: ReconstructOptions) -> None:
  """Checks reconstruct's options against the run."""
  common.check_positive(o.num, "--num")
  n = len(run.dataset.test_images)
  require(o.num <= n, f"--num={o.num} exceeds the {n} test examples.")


RECONSTRUCT = common.Command("reconstruct", ReconstructOptions, check_reconstruct, "reconstruct")


def run_reconstruct(run: runs.Run, **options) -> dict:
  """Inputs (top row) and their reconstructions (decoded posterior means, bottom row)."""
  o = RECONSTRUCT.parse(run, options)
  images, labels = common.split_arrays(run, "test")
  x = np.asarray(common.inference(run).inputs(images[: o.num]))
  recon = common.inference(run).reconstruct(x, None if labels is None else labels[: o.num])
  with RECONSTRUCT.outputs(run, o) as out:
    out.save_image(image_grid(np.concatenate([x, recon]), ncol=o.num))
  return {"files": out.files, "inputs": x, "images": recon, "psnr": float(psnr(x, recon).mean())}


# denoise


@dataclasses.dataclass
class DenoiseOptions(common.Options):
  """noise: gaussian|salt_pepper; level: noise std or flip probability; num: examples shown.

  num_eval: test examples the mean PSNRs are taken over.
  """

  noise: str = "gaussian"
  level: float = 0.3
  num: int = 16
  num_eval: int = 1000


def check_denoise(run: runs.Run, o: DenoiseOptions) -> None:
  """Checks denoise's options against the run."""
  require(o.noise in NOISES, f"--noise={o.noise!r} is not one of {NOISES}.")
  if o.noise == "salt_pepper":
    require(0 <= o.level <= 1, f"--level={o.level} must be a probability in [0, 1].")
  require(o.level >= 0, f"--level={o.level} must be >= 0.")
  common.check_positive(o.num, "--num")
  common.check_positive(o.num_eval, "--num_eval")


DENOISE = common.Command("denoise", DenoiseOptions, check_denoise, "denoise")


def run_denoise(run: runs.Run, **options) -> dict:
  """Corrupts test inputs, decodes their posterior means; PSNR of noisy and denoised vs clean.

  The PNG rows are clean, noisy and denoised inputs; the JSON has the mean PSNRs.
  """
  o = DENOISE.parse(run, options)
  images, labels = common.split_arrays(run, "test")
  n = min(max(o.num, o.num_eval), len(images))
  clean = np.asarray(common.inference(run).inputs(images[:n]))
  keys = index_keys(common.tool_key(run, o.seed, "denoise"), jnp.arange(n))
  noisy = np.asarray(corrupt(keys, jnp.asarray(clean), o.noise, o.level))
  denoised = common.inference(run).reconstruct(noisy, None if labels is None else labels[:n])
  m = min(n, o.num_eval)
  recon = common.inference(run).reconstruct(clean[:m], None if labels is None else labels[:m])
  summary = {
    "noise": o.noise,
    "level": o.level,
    "num_examples": m,
    "checkpoint_step": run.step,
    "psnr_noisy": float(psnr(clean[:m], noisy[:m]).mean()),
    "psnr_denoised": float(psnr(clean[:m], denoised[:m]).mean()),
    "psnr_reconstruction": float(psnr(clean[:m], recon).mean()),
  }
  k = min(o.num, n)
  with DENOISE.outputs(run, o) as out:
    out.save_image(image_grid(np.concatenate([clean[:k], noisy[:k], denoised[:k]]), ncol=k))
    out.save_json(summary)
  return {
    "files": out.files,
    "summary": summary,
    "clean": clean,
    "noisy": noisy,
    "images": denoised,
  }


# augment


@dataclasses.dataclass
class AugmentOptions(common.Options):
  """split: train|test; num: source examples (the first ones); num_per_example: draws per source.

  temperature: scales the posterior std of the draws.
  """

  split: str = "train"
  num_per_example: int = 4
  num: int = 1000
  temperature: float = 1.0


def check_augment(run: runs.Run, o: AugmentOptions) -> None:
  """Checks augment's options against the run."""
  require(o.split in SPLITS, f"--split={o.split!r} is not one of {SPLITS}.")
  common.split_arrays(run, o.split)
  common.check_positive(o.num, "--num")
  common.check_positive(o.num_per_example, "--num_per_example")
  require(o.temperature >= 0, f"--temperature={o.temperature} must be >= 0.")
  require(
    run.model.capabilities.gaussian_posterior,
    f"model.name={run.config.model.name!r} encodes to a point, not a distribution q(z|x) to "
    "draw from; augment needs a VAE.",
  )


AUGMENT = common.Command("augment", AugmentOptions, check_augment, "augment_{split}")


def run_augment(run: runs.Run, **options) -> dict:
  """Decoded means of z = mu + temperature * sigma * eps around q(z|x) of the first `num` examples.

  Writes `augment_<split>.npz` with `images` (uint8, [num * num_per_example, H, W, C]), `labels`
  (when the split has them) and `source_index`, and a preview PNG (source, then its draws, per row).
  """
  o = AUGMENT.parse(run, options)
  images, labels = common.split_arrays(run, o.split)
  n = min(o.num, len(images))
  src_labels = None if labels is None else labels[:n]
  post = common.inference(run).encode(images[:n], src_labels)
  source_index = np.repeat(np.arange(n), o.num_per_example)
  keys = index_keys(common.tool_key(run, o.seed, f"augment_{o.split}"), jnp.arange(n))
  shape = (o.num_per_example, post.mean.shape[-1])
  eps = jax.vmap(lambda k: jax.random.normal(k, shape))(keys).reshape(-1, shape[-1])
  sigma = np.exp(0.5 * post.logvar[source_index])
  z = post.mean[source_index] + o.temperature * sigma * np.asarray(eps)
  out_labels = None if src_labels is None else src_labels[source_index]
  decoded = common.inference(run).decode(z.astype(np.float32), out_labels)
  pixels = np.round(np.clip(decoded, 0, 1) * 255).astype(np.uint8)
  arrays = {"images": pixels, "source_index": source_index}
  if out_labels is not None:
    arrays["labels"] = out_labels
  rows = min(n, 8)
  preview = np.concatenate(
    [
      np.concatenate([common.inference(run).inputs(images[i : i + 1]), decoded[source_index == i]])
      for i in range(rows)
    ]
  )
  with AUGMENT.outputs(run, o) as out:
    out.save_npz(**arrays)
    out.save_image(image_grid(preview, ncol=o.num_per_example + 1))
  return {"files": out.files, **arrays}
