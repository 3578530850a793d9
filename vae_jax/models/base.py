"""The model contract: what every model family offers the loop, evaluation and tools.

A family is a Flax module deriving from `Model`. It returns typed values (`Posterior` from
`encode`, `ModelOutput` from the forward pass), declares what it can do in `capabilities`, and owns
its configuration: `family_config()` gives the defaults of its own fields (they live in
`config.model.<name>`), `validate(config)` checks them, and `from_config(config.model, data)`
builds the module. Nothing outside a model branches on its name or inspects what it returned.
"""

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import flax
import flax.linen as nn
import jax
import ml_collections
import optax

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.losses import elbo, likelihoods
from vae_jax.models import codes


@flax.struct.dataclass
class Posterior:
  """What `encode` returns.

  Attributes:
    mean: the deterministic code of x [batch, d]: the posterior mean (an autoencoder's code, a
      VQ-VAE's continuous encoder output).
    logvar: the diagonal log-variance [batch, d] of a Gaussian posterior; None otherwise.
  """

  mean: jax.Array
  logvar: jax.Array | None = None


@flax.struct.dataclass
class ModelOutput:
  """What the forward pass returns for a batch and one posterior sample per example.

  A model reports its KL either per dimension (`kl_per_dim`, analytic) or through the densities of
  its sample (`log_q_z`, `log_p_z`: a Monte Carlo KL, and the importance weights of IWAE and the
  IW likelihood), or both; an autoencoder reports neither.

  Attributes:
    out: decoder output (likelihood parameters), [batch, H, W, C].
    z: the latent sample the decoder saw, [batch, d].
    kl_per_dim: analytic KL per latent dimension [batch, d], or None.
    log_q_z: log q(z|x) of the sample [batch], or None.
    log_p_z: log p(z) of the sample [batch], or None.
    log_sigma: the learned observation log-std of `gaussian_learned`, or None.
    extra_terms: more per-example terms [batch] for the objective and logs; `aux_loss` is added to
      the loss (e.g. a VQ-VAE's commitment and codebook losses).
    stats: per-example arrays that the model's `batch_loss` reads (e.g. `mu`, `logvar`).
  """

  out: jax.Array
  z: jax.Array
  kl_per_dim: jax.Array | None = None
  log_q_z: jax.Array | None = None
  log_p_z: jax.Array | None = None
  log_sigma: jax.Array | None = None
  extra_terms: dict = flax.struct.field(default_factory=dict)
  stats: dict = flax.struct.field(default_factory=dict)

  def terms(
    self,
    x: jax.Array,
    likelihood: str,
    gaussian_sigma: float = 1.0,
    with_log_weight: bool = False,
  ) -> dict[str, jax.Array]:
    """Per-example objective terms (`elbo.example_terms`) of these outputs for inputs x."""
    recon = likelihoods.log_likelihood(x, self.out, likelihood, gaussian_sigma, self.log_sigma)
    return elbo.example_terms(
      recon, self.kl_per_dim, self.log_q_z, self.log_p_z, self.extra_terms, with_log_weight
    )


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What a family can do; the loop, evaluation and tools read these instead of names.

  Attributes:
    conditional: takes class labels y (and needs a labelled dataset).
    density: reports `log_q_z` and `log_p_z`, so it trains with IWAE and has an IW likelihood.
    prior: has a prior to sample (`generate`).
    batch_loss: adds a loss over the whole global batch (`batch_loss`).
    gaussian_posterior: `encode` returns a log-variance too (per-dimension KL diagnostics).
    joint_density: log p(z) and p(x|z) are explicit functions of the whole latent z
      (`prior_sample`, `log_prior`, `decode_latent`), so log p(x) can be estimated by annealed
      importance sampling from the prior (`evaluation.ais`).
    mutable: variable collections the forward pass (and `batch_loss`) update in training.
    takes_step: the forward pass takes the training step as `step=` (e.g. to anneal a
      temperature); it gets the step in training and None outside it (evaluation, likelihoods).
  """

  conditional: bool = False
  density: bool = False
  prior: bool = False
  batch_loss: bool = False
  gaussian_posterior: bool = False
  joint_density: bool = False
  mutable: tuple[str, ...] = ()
  takes_step: bool = False


class Model(nn.Module):
  """Base of every model family: the contract's methods and the family's configuration.

  Subclasses implement `encode(x, y) -> Posterior`, `decode(z, y) -> decoder output` and
  `__call__(x, keys, y) -> ModelOutput` (one PRNG key per example; with `capabilities.takes_step`
  also `step=None`); with `capabilities.prior` also `generate(rng, num, y, temperature)`, with
  `capabilities.joint_density` also `prior_sample`, `log_prior` and `decode_latent`, and with
  `capabilities.batch_loss` also `batch_loss(outputs, collectives, rng, mask)`. `code_space()`
  says what traversing and interpolating the code `encode(...).mean` means (`codes`).
  """

  capabilities: ClassVar[Capabilities] = Capabilities()

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict | None:
    """Defaults of the family's own fields (`config.model.<name>`); None when it has none."""
    return None

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Checks the family's fields in the whole run config; raises `errors.ConfigError`."""
    del config

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "Model":
    """Builds the module from `config.model` for the dataset described by `data`."""
    raise NotImplementedError

  @classmethod
  def param_optimizers(
    cls, config: ml_collections.ConfigDict
  ) -> Mapping[str, optax.GradientTransformation]:
    """Own optimizers for top-level parameter subtrees (e.g. a discriminator's); default none."""
    del config
    return {}

  def code_space(self) -> codes.RealCodes | codes.CategoricalCodes:
    """How the tools traverse and interpolate this family's code; default: real coordinates."""
    return codes.RealCodes()

  def prior_sample(self, keys: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """Latents z ~ p(z) [batch, latent_size], one draw per key (families with `joint_density`).

    `latent_size` covers every stochastic layer (a hierarchy's layers concatenated), so that
    `log_prior` and `decode_latent` of the draw are the model's whole joint.
    """
    raise NotImplementedError

  def log_prior(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """log p(z) [batch] of whole latents z [batch, latent_size] (families with `joint_density`)."""
    raise NotImplementedError

  def decode_latent(self, z: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """p(x|z) for whole latents z: a `ModelOutput` with `out`, `z` and `log_sigma` set.

    With `losses.likelihoods.log_likelihood(x, o.out, ..., o.log_sigma)` this gives log p(x|z)
    (families with `joint_density`).
    """
    raise NotImplementedError

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A loss over the global batch and what to log about it (families with `batch_loss`).

    Args:
      outputs: the forward pass's outputs on this device's shard.
      collectives: global-batch reductions (`LOCAL` outside `shard_map`).
      rng: a key for the whole batch, the same on every device.
      mask: [batch] 1 for real examples, 0 for padding (evaluation batches); None: all real.
    """
    raise NotImplementedError
