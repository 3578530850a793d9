"""A learned prior for a trained VQ-VAE: a gated PixelCNN over its grid of codes.

The second stage of van den Oord et al. 2017 ("Neural discrete representation learning"): a VQ-VAE
is trained first (family `vqvae`, uniform prior), then this family fits an autoregressive prior
p(c) = prod_t p(c_t | c_<t) to the code indices c its encoder gives the training images, with
the gated PixelCNN of van den Oord et al. 2016 (`pixelcnn`). The VQ-VAE comes from
`config.model.vqvae_prior.vqvae_workdir` (through `runs.open_run`) and stays frozen: its variables
are constants of this model, not parameters, so only the PixelCNN trains. An MLP VQ-VAE's L codes
are modelled as a 1 x L grid.

The posterior q(c|x) is a point mass on the encoder's codes, so KL(q(c|x) || p(c)) = -log p(c)
exactly: the forward pass reports the PixelCNN's negative log-likelihood of each position's code
as `kl_per_dim` [batch, L], and the usual loss -recon + KL is the negative ELBO of the two-stage
model. Its reconstruction term comes from the frozen decoder and has no gradient, so the loss
moves only through the NLL of the codes (nats per image); `code_nll_nats` and `code_nll_bits` are
that NLL per code. The objective must therefore be the plain ELBO (beta 1, no schedule).

`encode` and `decode` are the VQ-VAE's, so the latent tools work on a prior run as on its VQ-VAE;
`generate` draws code grids from the PixelCNN one position at a time and decodes them. Reopening
a prior run reopens its VQ-VAE run too: keep that workdir where it was.

Family `vqvae_cprior` (`VQVAEClassPrior`) is the class-conditional form, the gated PixelCNN's own
conditioning: p(c | y) with the label y; with y uniform over the classes it is also an
unconditional prior p(c) = mean_y p(c | y) (`marginal_code_nll`).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import CheckpointError, ConfigError, require
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.pixelcnn import GatedPixelCNN, code_nll, sample_codes
from vae_jax.models.vqvae import VQVAE


def matched_fields(config: ml_collections.ConfigDict) -> list[str]:
  """The data and likelihood fields that must equal the VQ-VAE run's.

  The prior models the codes of the images that VQ-VAE was trained on, and its reconstruction
  term uses the same likelihood.
  """
  fields = ["data.name", "data.binarize", "model.likelihood"]
  if config.data.binarize == "threshold":
    fields.append("data.binarize_threshold")
  if config.model.likelihood == "gaussian":
    fields.append("model.gaussian_sigma")
  return fields


class FrozenVQVAE:
  """A trained VQ-VAE and its variables, applied as constants.

  Equality and hashing are by identity (Python's default), so a model holding one can be a static
  `jax.jit` argument and its variables are baked into the compiled functions.

  Attributes:
    module: the VQ-VAE.
    variables: its restored variables (numpy arrays).
    workdir: the run they came from.
    step: the checkpoint's step.
  """

  def __init__(self, module: VQVAE, variables: dict, workdir: str, step: int):
    self.module, self.variables, self.workdir, self.step = module, variables, workdir, step

  def __call__(self, method, *args):
    """`method` of the VQ-VAE (e.g. `VQVAE.encode`) on `args`, with the frozen variables."""
    return self.module.apply(self.variables, *args, method=method)


def _vqvae_config(workdir: str | None, section: str) -> ml_collections.ConfigDict:
  """The resolved config of the VQ-VAE run in `workdir`; one `ConfigError` line otherwise."""
  # runs imports the model registry, which imports this module.
  from vae_jax import configuration, models, runs

  field = f"model.{section}.vqvae_workdir"
  require(
    bool(workdir), f"{field} is not set; pass --config.{field}=<the workdir of a VQ-VAE run>."
  )
  require(os.path.isdir(workdir), f"{field}={workdir!r} is not a directory; train a VQ-VAE there.")
  try:
    config = runs.load_config(workdir)
  except CheckpointError as e:
    raise ConfigError(f"{field}: {e}") from None
  name = config.model.name
  require(
    name in models.MODELS and issubclass(models.family(name), VQVAE),
    f"{field}={workdir!r} holds a model.name={name!r} run, not a VQ-VAE; give a run of "
    "configs/mnist_vqvae.py (model.name='vqvae').",
  )
  return configuration.resolve(config)


def _check_checkpoint(workdir: str, checkpoint: str, keep: int, section: str) -> None:
  from vae_jax import runs
  from vae_jax.training.checkpoints import Checkpointer

  ckpt = Checkpointer(workdir, keep)
  try:
    runs.resolve_step(workdir, str(checkpoint), ckpt.all_steps())
  except CheckpointError as e:
    raise ConfigError(f"model.{section}.vqvae_checkpoint: {e}") from None
  finally:
    ckpt.close()


class VQVAEPrior(Model):
  """A frozen VQ-VAE with a gated PixelCNN prior over its codes.

  Attributes:
    vqvae: the trained VQ-VAE (frozen).
    pixelcnn: the prior, code grids [batch, H, W] -> logits [batch, H, W, K].
    grid: (H, W) of the code grid; H * W = the VQ-VAE's L, positions in raster order.
  """

  capabilities = Capabilities(prior=True, takes_step=True)
  section = "vqvae_prior"  # the family's name, and its fields' place in config.model

  vqvae: FrozenVQVAE
  pixelcnn: GatedPixelCNN
  grid: tuple[int, int]

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """The VQ-VAE run to model (and its checkpoint) and the PixelCNN's sizes."""
    return ml_collections.ConfigDict(
      {
        "vqvae_workdir": "",  # the VQ-VAE run (required)
        "vqvae_checkpoint": "latest",  # latest | best | a step number
        "features": 64,
        "num_layers": 8,
        "kernel_size": 3,
        "head_features": 256,
        "dropout": 0.0,  # of each layer's horizontal residual branch, in training only
      }
    )

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Sizes, the plain-ELBO objective, and a VQ-VAE run with a checkpoint and the same data."""
    name, obj = cls.section, config.objective
    c = config.model[name]
    for field in ("features", "num_layers", "head_features"):
      require(c[field] >= 1, f"model.{name}.{field}={c[field]} must be >= 1.")
    require(
      c.kernel_size >= 1 and c.kernel_size % 2 == 1,
      f"model.{name}.kernel_size={c.kernel_size} must be odd and >= 1.",
    )
    require(0 <= c.dropout < 1, f"model.{name}.dropout={c.dropout} must be in [0, 1).")
    require(
      obj.estimator == "elbo"
      and obj.kl_penalty == "beta"
      and obj.beta == 1
      and obj.kl_schedule == "constant"
      and obj.free_bits == 0,
      f"model.name={name!r} trains on the code NLL, which is its whole KL: keep "
      "objective.estimator='elbo', kl_penalty='beta', beta=1, kl_schedule='constant', "
      "free_bits=0.",
    )
    vq = _vqvae_config(c.vqvae_workdir, name)
    for field in matched_fields(config):
      section, key = field.split(".")
      mine, theirs = config[section][key], vq[section][key]
      require(
        mine == theirs,
        f"{field}={mine!r} differs from the VQ-VAE run's {theirs!r} ({c.vqvae_workdir}); set "
        f"--config.{field} to match.",
      )
    _check_checkpoint(c.vqvae_workdir, c.vqvae_checkpoint, vq.keep_checkpoints, name)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "VQVAEPrior":
    """Restores the VQ-VAE run and builds the PixelCNN for its codebook size and grid."""
    from vae_jax import runs

    c = config[cls.section]
    run = runs.open_run(c.vqvae_workdir, c.vqvae_checkpoint, spec=data)
    vq = run.model
    shape = tuple(vq.latent_shape)
    grid = shape if len(shape) == 2 else (1, shape[0])
    frozen = FrozenVQVAE(vq, jax.device_get(run.model_vars), run.workdir, run.step)
    num_classes = data.num_classes if cls.capabilities.conditional else 0
    net = GatedPixelCNN(
      vq.num_codes, c.features, c.num_layers, c.kernel_size, c.head_features, c.dropout, num_classes
    )
    return cls(frozen, net, grid)

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """The VQ-VAE's encoder output z_e, [batch, D * L]."""
    del y
    return self.vqvae(VQVAE.encode, x)

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The VQ-VAE's decoder output of vectors z [batch, D * L] (quantized first)."""
    del y
    return self.vqvae(VQVAE.decode, z)

  def logits(
    self, codes: jax.Array, keys: jax.Array | None = None, y: jax.Array | None = None
  ) -> jax.Array:
    """The PixelCNN's logits [batch, L, K] of code indices [batch, L] (raster order).

    `keys` (one per example) switch the PixelCNN's dropout on; None: deterministic. `y`: the
    labels [batch] of a class-conditional prior, else None.
    """
    b, y = codes.shape[0], self._labels(y)
    return self.pixelcnn(codes.reshape(b, *self.grid), keys, y).reshape(b, codes.shape[1], -1)

  def _labels(self, y: jax.Array | None) -> jax.Array | None:
    """y for a class-conditional prior; None (labels ignored) for the unconditional one."""
    return y if self.capabilities.conditional else None

  def __call__(
    self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None, step=None
  ) -> ModelOutput:
    """The VQ-VAE's reconstruction and codes, and the prior's NLL of the codes.

    Args:
      x: images [batch, H, W, C].
      keys: one PRNG key per example; in training they draw the PixelCNN's dropout masks.
      y: labels [batch]: the class-conditional prior's condition; the unconditional ignores them.
      step: the training step, or None outside training (no dropout: the exact NLL).

    Returns:
      The frozen decoder's output, the quantized codes `z` [batch, D * L], `kl_per_dim` = -log
      p(c_t | c_<t) per position [batch, L] in nats, and `extra_terms` `code_nll_nats` and
      `code_nll_bits` (the mean over positions) [batch].
    """
    codes = self.vqvae(VQVAE.code_indices, x)
    z = self.vqvae(VQVAE.code_vectors, codes)
    nll = code_nll(self.logits(codes, None if step is None else keys, y), codes)
    per_code = nll.mean(axis=-1)
    return ModelOutput(
      out=self.decode(z),
      z=z,
      kl_per_dim=nll,
      extra_terms={"code_nll_nats": per_code, "code_nll_bits": per_code / math.log(2.0)},
    )

  def sample_codes(
    self, rng: jax.Array, num: int, temperature: float = 1.0, y: jax.Array | None = None
  ) -> jax.Array:
    """`num` code grids drawn from the PixelCNN, [num, L] in raster order (see `sample_codes`).

    `temperature` divides the logits of every position; 0 takes the most likely code. `y`: the
    labels [num] of a class-conditional prior, else None.
    """
    fn = functools.partial(self.pixelcnn, keys=None, y=self._labels(y))
    codes = sample_codes(fn, rng, num, self.grid, jnp.asarray(temperature))
    return codes.reshape(num, -1)

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` code grids drawn from the PixelCNN (`sample_codes`)."""
    codes = self.sample_codes(rng, num, temperature, y)
    return self.decode(self.vqvae(VQVAE.code_vectors, codes))


class VQVAEClassPrior(VQVAEPrior):
  """The class-conditional prior p(c | y): labels y condition every gated layer.

  Its training loss is -log p(c | y) of the codes of labelled images; `generate` needs labels.
  With y uniform over the N classes the model is also a prior p(c) = (1/N) sum_y p(c | y),
  whose negative log-likelihood `marginal_code_nll` computes exactly (N passes).
  """

  capabilities = Capabilities(conditional=True, prior=True, takes_step=True)
  section = "vqvae_cprior"

  def class_code_nll(self, x: jax.Array) -> jax.Array:
    """-log p(c | y) [num_classes, batch] in nats of the codes c of images x, for every class y."""
    codes = self.vqvae(VQVAE.code_indices, x)

    def nll(label):
      y = jnp.full((codes.shape[0],), label, jnp.int32)
      return code_nll(self.logits(codes, None, y), codes).sum(axis=-1)

    return jax.lax.map(nll, jnp.arange(self.pixelcnn.num_classes))

  def marginal_code_nll(self, x: jax.Array) -> jax.Array:
    """-log p(c) [batch] in nats of the codes c of images x, with y uniform over the classes."""
    return marginal_nll(self.class_code_nll(x))


def marginal_nll(class_nll: jax.Array) -> jax.Array:
  """-log mean_y p(c | y) [batch] of the per-class NLLs [num_classes, batch] (`class_code_nll`)."""
  return -(jax.nn.logsumexp(-class_nll, axis=0) - math.log(class_nll.shape[0]))
