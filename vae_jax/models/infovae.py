"""InfoVAE / MMD-VAE (Zhao et al. 2017, "InfoVAE: information maximizing variational autoencoders").

The paper's InfoVAE objective, with MMD as its divergence D, is

  E[log p(x|z)] - (1 - alpha) E[KL(q(z|x) || p(z))] - (alpha + lambda - 1) MMD(q(z), p(z)).

The Gaussian VAE's ELBO terms come from the train step, whose KL weight `objective.beta` is
1 - alpha; `batch_loss` adds `mmd_weight` = alpha + lambda - 1 times MMD_u^2 between the posterior
samples z of the GLOBAL batch and as many prior draws (`losses.mmd`; the prior draws come from the
step's batch key, so the loss does not depend on the device count). The default kernel is the
Gaussian exp(-||x - y||^2 / (2 d)) (the RBF of `losses.mmd` at scale 1); the paper names a Gaussian
kernel without its width, and the authors' MMD-VAE code uses exp(-||x - y||^2 / d^2) with the
biased V-statistic, where this uses the unbiased U-statistic.

Parameters are the plain VAE's, so every tool that reads a VAE reads an InfoVAE.
"""

import jax
import ml_collections

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.models.base import Capabilities, ModelOutput
from vae_jax.models.vae import VAE, vae_kwargs
from vae_jax.models.wae import mmd_family_config, mmd_fields, prior_mmd_loss, validate_mmd


class InfoVAE(VAE):
  """The `VAE` plus a batch loss mmd_weight * MMD(q(z), p(z)).

  Attributes:
    mmd_weight: alpha + lambda - 1 in the paper's notation (the KL weight 1 - alpha is
      `objective.beta`).
    kernel: 'rbf' or 'imq' (`losses.mmd.KERNELS`).
    scales: bandwidth multipliers of C = 2 d the kernel is summed over.
  """

  capabilities = Capabilities(density=True, prior=True, batch_loss=True, gaussian_posterior=True)

  mmd_weight: float = 1000.0
  kernel: str = "rbf"
  scales: tuple[float, ...] = (1.0,)

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """alpha + lambda - 1 = 1000 with the Gaussian kernel of bandwidth C = 2 d."""
    return mmd_family_config(1000.0, "rbf", (1.0,))

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """See `wae.validate_mmd`."""
    validate_mmd(config, "infovae")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "InfoVAE":
    """The VAE of `config.model` with the MMD term of `config.model.infovae`."""
    return cls(**vae_kwargs(config, data.image_shape), **mmd_fields(config.infovae))

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mmd_weight * MMD_u^2 of the global batch's posterior samples z and the prior."""
    return prior_mmd_loss(self, outputs, collectives, rng, mask)
