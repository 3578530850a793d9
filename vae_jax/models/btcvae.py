"""beta-TCVAE (Chen et al. 2018): the Gaussian VAE with a reweighted KL decomposition.

The loss is -recon + alpha MI + beta TC + gamma dwKL (see `vae_jax.total_correlation`). The train
step already adds the ELBO's analytic KL (`objective.beta`, keep it 1 for the paper's objective), so
`batch_loss` adds (alpha - 1) MI + (beta - 1) TC + (gamma - 1) dwKL; MI + TC + dwKL is the Monte
Carlo KL log q(z|x) - log p(z), whose mean is the analytic KL. With alpha = gamma = 1 this is the
ELBO plus (beta - 1) TC, as in the paper's experiments and disentanglement_lib.

The estimates of log q(z) need the whole global batch: `batch_loss` gathers z, mu and logvar over
the devices, so the loss does not depend on how many devices share the batch. Parameters are the
plain VAE's, so every tool that reads a VAE reads a beta-TCVAE.
"""

import jax
import jax.numpy as jnp

from vae_jax import total_correlation
from vae_jax.models.vae import VAE
from vae_jax.parallel import Collectives


class BetaTCVAE(VAE):
  """The `VAE` plus a batch loss on the MI / TC / dimension-wise KL decomposition of its KL.

  Attributes:
    alpha: weight of the index-code mutual information.
    beta: weight of the total correlation (6 on dSprites in the paper).
    gamma: weight of the dimension-wise KL.
    dataset_size: N, the number of training examples the aggregate posterior averages over.
    estimator: 'mws' or 'mss' (`total_correlation.ESTIMATORS`).
  """

  alpha: float = 1.0
  beta: float = 6.0
  gamma: float = 1.0
  dataset_size: int = 737_280
  estimator: str = "mws"

  def batch_loss(
    self, outputs: dict, collectives: Collectives, rng: jax.Array
  ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The reweighting of the decomposition over the global batch, and its three terms."""
    del rng
    z, mu, logvar = (collectives.gather(outputs[k]) for k in ("z", "mu", "logvar"))
    terms = total_correlation.kl_decomposition(z, mu, logvar, self.dataset_size, self.estimator)
    mi, tc, dw_kl = (
      terms[k].mean() for k in ("mutual_information", "total_correlation", "dimwise_kl")
    )
    loss = (self.alpha - 1.0) * mi + (self.beta - 1.0) * tc + (self.gamma - 1.0) * dw_kl
    return loss, {"mutual_information": mi, "tc_estimate": tc, "dimwise_kl": dw_kl}
