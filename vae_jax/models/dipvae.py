"""DIP-VAE I and II: the VAE plus a penalty pulling the aggregate posterior's covariance to I.

Kumar et al. 2018, "Variational inference of disentangled latent concepts from unlabeled
observations":

  penalty = lambda_od * sum_{i != j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2,

with Cov = Cov[mu(x)] for type 'i' and Cov = Cov[mu(x)] + E[diag(sigma^2(x))] (the covariance of
q(z) itself) for type 'ii', over the GLOBAL batch: `batch_loss` gathers mu and logvar over the
devices, so the penalty does not depend on the device count. As in disentanglement_lib
(`dip_vae` in methods/unsupervised/vae.py) the covariance divides by the batch size (not the batch
size - 1) and lambda_d = lambda_d_factor * lambda_od. Its unsupervised study sets the factor to 10
for type 'i' and 1 for type 'ii' and sweeps lambda_od over 1, 2, 5, 10, 20, 50; the defaults here
are type 'ii' with factor 1 (set `lambda_d_factor=10` with `type='i'`). The ELBO's KL keeps its
weight `objective.beta` (1 in the paper and disentanglement_lib).

Parameters are the plain VAE's, so every tool that reads a VAE reads a DIP-VAE.
"""

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_choice
from vae_jax.models.base import Capabilities, ModelOutput
from vae_jax.models.vae import VAE, vae_kwargs

TYPES = ("i", "ii")


def aggregate_covariance(
  mu: jax.Array, logvar: jax.Array, dip_type: str, mask: jax.Array | None = None
) -> jax.Array:
  """Cov[mu] [d, d] over the rows of mu [B, d] ('i'), plus E[diag(exp(logvar))] ('ii').

  Rows with mask 0 (padding) are left out; the means divide by the number of real rows.
  """
  w = jnp.ones(mu.shape[0], mu.dtype) if mask is None else mask.astype(mu.dtype)
  n = jnp.maximum(jnp.sum(w), 1.0)
  centered = mu - (w @ mu) / n
  cov = (centered * w[:, None]).T @ centered / n
  if dip_type == "ii":
    cov = cov + jnp.diag((w @ jnp.exp(logvar)) / n)
  return cov


def covariance_terms(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum_{i != j} Cov_ij^2, sum_i (Cov_ii - 1)^2): the off-diagonal and diagonal deviations."""
  diag = jnp.diagonal(cov)
  return jnp.sum((cov - jnp.diag(diag)) ** 2), jnp.sum((diag - 1.0) ** 2)


class DIPVAE(VAE):
  """The `VAE` plus the DIP penalty on the covariance of its aggregate posterior.

  Attributes:
    dip_type: 'i' (Cov[mu]) or 'ii' (Cov[mu] + E[diag(sigma^2)]).
    lambda_od: weight of the off-diagonal entries.
    lambda_d: weight of the diagonal entries' deviations from 1.
  """

  capabilities = Capabilities(density=True, prior=True, batch_loss=True, gaussian_posterior=True)

  dip_type: str = "ii"
  lambda_od: float = 10.0
  lambda_d: float = 10.0

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """type, lambda_od and lambda_d_factor (lambda_d = factor * lambda_od): DIP-VAE-II's."""
    return ml_collections.ConfigDict({"type": "ii", "lambda_od": 10.0, "lambda_d_factor": 1.0})

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """A known type, weights >= 0, two examples per batch."""
    c = config.model.dipvae
    require_choice(c.type, TYPES, "model.dipvae.type")
    require(c.lambda_od >= 0, f"model.dipvae.lambda_od={c.lambda_od} must be >= 0.")
    require(
      c.lambda_d_factor >= 0, f"model.dipvae.lambda_d_factor={c.lambda_d_factor} must be >= 0."
    )
    require(
      config.data.batch_size >= 2,
      "model.name='dipvae' estimates a covariance over the batch: data.batch_size must be >= 2.",
    )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "DIPVAE":
    """The VAE of `config.model` with the penalty of `config.model.dipvae`."""
    c = config.dipvae
    return cls(
      **vae_kwargs(config, data.image_shape),
      dip_type=c.type,
      lambda_od=c.lambda_od,
      lambda_d=c.lambda_d_factor * c.lambda_od,
    )

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DIP penalty on the covariance over the global batch, and its two sums.

    Padding rows (mask 0) are left out of the covariance.
    """
    del rng
    mu, logvar = (collectives.gather(outputs.stats[k]) for k in ("mu", "logvar"))
    mask = None if mask is None else collectives.gather(mask)
    off_diagonal, diagonal = covariance_terms(aggregate_covariance(mu, logvar, self.dip_type, mask))
    penalty = self.lambda_od * off_diagonal + self.lambda_d * diagonal
    return penalty, {"dip_off_diagonal": off_diagonal, "dip_diagonal": diagonal}
