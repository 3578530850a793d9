"""beta-TCVAE (Chen et al. 2018): the Gaussian VAE with a reweighted KL decomposition.

The loss is -recon + alpha MI + beta TC + gamma dwKL (see `losses.total_correlation`). The train
step already adds the ELBO's analytic KL (`objective.beta`, keep it 1 for the paper's objective), so
`batch_loss` adds (alpha - 1) MI + (beta - 1) TC + (gamma - 1) dwKL; MI + TC + dwKL is the Monte
Carlo KL log q(z|x) - log p(z), whose mean is the analytic KL. With alpha = gamma = 1 this is the
ELBO plus (beta - 1) TC, as in the paper's experiments and disentanglement_lib.

The estimates of log q(z) need the whole global batch: `batch_loss` gathers z, mu and logvar over
the devices, so the loss does not depend on how many devices share the batch. N, the number of
examples the aggregate posterior averages over, is the dataset's training-split size. Parameters
are the plain VAE's, so every tool that reads a VAE reads a beta-TCVAE.
"""

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_choice
from vae_jax.losses import total_correlation
from vae_jax.models.base import Capabilities, ModelOutput
from vae_jax.models.vae import VAE, vae_kwargs


class BetaTCVAE(VAE):
  """The `VAE` plus a batch loss on the MI / TC / dimension-wise KL decomposition of its KL.

  Attributes:
    alpha: weight of the index-code mutual information.
    beta: weight of the total correlation (6 on dSprites in the paper).
    gamma: weight of the dimension-wise KL.
    dataset_size: N, the number of training examples the aggregate posterior averages over.
    estimator: 'mws' or 'mss' (`total_correlation.ESTIMATORS`).
  """

  capabilities = Capabilities(
    density=True, prior=True, batch_loss=True, gaussian_posterior=True, joint_density=True
  )

  alpha: float = 1.0
  beta: float = 6.0
  gamma: float = 1.0
  dataset_size: int = 737_280
  estimator: str = "mws"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """alpha, beta, gamma (weights of MI, TC, dimension-wise KL) and the log q(z) estimator."""
    return ml_collections.ConfigDict({"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "estimator": "mws"})

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """The weights are >= 0; 'mss' needs two examples per batch."""
    c = config.model.btcvae
    require_choice(c.estimator, total_correlation.ESTIMATORS, "model.btcvae.estimator")
    for field in ("alpha", "beta", "gamma"):
      require(c[field] >= 0, f"model.btcvae.{field}={c[field]} must be >= 0.")
    require(
      c.estimator != "mss" or config.data.batch_size >= 2,
      "model.btcvae.estimator='mss' needs data.batch_size >= 2.",
    )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "BetaTCVAE":
    """The beta-TCVAE of `config.model`; N is the dataset's number of training examples."""
    c = config.btcvae
    return cls(
      **vae_kwargs(config, data.image_shape),
      alpha=c.alpha,
      beta=c.beta,
      gamma=c.gamma,
      dataset_size=data.num_train_examples,
      estimator=c.estimator,
    )

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The reweighting of the decomposition over the global batch, and its three terms.

    Each device estimates log q(z_i) for its own samples i against every posterior of the global
    batch (gathered), so the [b, M, D] work shrinks with the number of devices. Padding rows
    (mask 0) are left out of the estimates of log q(z) and of the means.
    """
    del rng
    mu, logvar = (collectives.gather(v) for v in _posterior(outputs))
    all_mask = None if mask is None else collectives.gather(mask)
    rows = collectives.rows(outputs.z.shape[0])
    terms = total_correlation.kl_decomposition(
      outputs.z, mu, logvar, self.dataset_size, self.estimator, all_mask, rows
    )
    mi, tc, dw_kl = (
      _global_mean(collectives, terms[k], mask)
      for k in ("mutual_information", "total_correlation", "dimwise_kl")
    )
    loss = (self.alpha - 1.0) * mi + (self.beta - 1.0) * tc + (self.gamma - 1.0) * dw_kl
    return loss, {"mutual_information": mi, "tc_estimate": tc, "dimwise_kl": dw_kl}


def _posterior(outputs: ModelOutput) -> tuple[jax.Array, jax.Array]:
  return outputs.stats["mu"], outputs.stats["logvar"]


def _global_mean(collectives: Collectives, v: jax.Array, mask: jax.Array | None) -> jax.Array:
  """The mean of per-example values over the global batch's real rows."""
  if mask is None:
    return collectives.mean(v.mean())
  return collectives.mean(jnp.sum(v * mask)) / jnp.maximum(collectives.mean(jnp.sum(mask)), 1e-12)
