"""VAE with a VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior").

The prior is the mixture of the model's own posteriors at K learned pseudo-inputs u_k:
p(z) = (1/K) sum_k q(z|u_k), so log p(z) = logsumexp_k log q(z|u_k) - log K. The pseudo-inputs are
parameters of the image's shape, passed through Hardtanh(0, 1) before the encoder (pixels stay in
the data's [0, 1] range) and initialised N(0.05, 0.01) per pixel: the authors' implementation, where
u_k is a bias-free linear map of the k-th one-hot vector (its weight matrix is exactly these K
images) followed by the Hardtanh, with those initial moments for MNIST.

The KL has no closed form under a mixture, so the model reports the sample's `log_q_z` and
`log_p_z` (a single-sample Monte Carlo KL, the importance weights of IWAE and the IW likelihood)
and no `kl_per_dim`. `generate` picks a pseudo-input uniformly and samples its posterior.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import require
from vae_jax.losses import distributions
from vae_jax.models.base import Capabilities, ModelOutput
from vae_jax.models.vae import VAE, vae_kwargs


def mixture_log_density(z: jax.Array, means: jax.Array, logvars: jax.Array) -> jax.Array:
  """log (1/K) sum_k N(z | means_k, diag(exp(logvars_k))) of each row of z.

  Args:
    z: points [batch, d].
    means: component means [K, d].
    logvars: component log-variances [K, d].

  Returns:
    [batch] log densities.
  """
  per_component = distributions.gaussian_log_density(z[:, None, :], means[None], logvars[None])
  return jax.nn.logsumexp(per_component, axis=-1) - math.log(means.shape[0])


def _normal_init(mean: float, std: float):
  def init(key, shape, dtype=jnp.float32):
    return mean + std * jax.random.normal(key, shape).astype(dtype)

  return init


class VampPriorVAE(VAE):
  """q(z|x) = N(mu, diag(exp(logvar))), p(z) = (1/K) sum_k q(z|u_k), p(x|z) from the decoder.

  Attributes:
    image_shape: the shape (H, W, C) of one pseudo-input: the data's image shape.
    num_pseudo_inputs: K, the number of mixture components.
    pseudo_init_mean: mean of the pseudo-inputs' initial pixels.
    pseudo_init_std: standard deviation of the pseudo-inputs' initial pixels.
  """

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True)

  image_shape: Sequence[int] = ()
  num_pseudo_inputs: int = 500
  pseudo_init_mean: float = 0.05
  pseudo_init_std: float = 0.01

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """num_pseudo_inputs: K; pseudo_init_mean, pseudo_init_std: the pixels' initial moments."""
    return ml_collections.ConfigDict(
      {"num_pseudo_inputs": 500, "pseudo_init_mean": 0.05, "pseudo_init_std": 0.01}
    )

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """K >= 1; the initial mean lies in [0, 1], the std is >= 0."""
    c = config.model.vampprior
    k = c.num_pseudo_inputs
    require(k >= 1, f"model.vampprior.num_pseudo_inputs={k} must be >= 1.")
    mean, std = c.pseudo_init_mean, c.pseudo_init_std
    require(
      0.0 <= mean <= 1.0,
      f"model.vampprior.pseudo_init_mean={mean} must be in [0, 1] (pixel intensities).",
    )
    require(std >= 0.0, f"model.vampprior.pseudo_init_std={std} must be >= 0.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "VampPriorVAE":
    """The VampPrior VAE of `config.model` and `config.model.vampprior` for `data`'s images."""
    c = config.vampprior
    return cls(
      **vae_kwargs(config, data.image_shape),
      image_shape=tuple(data.image_shape),
      num_pseudo_inputs=c.num_pseudo_inputs,
      pseudo_init_mean=c.pseudo_init_mean,
      pseudo_init_std=c.pseudo_init_std,
    )

  def setup(self):  # noqa: D102
    super().setup()
    if not self.image_shape:
      raise ValueError("VampPriorVAE needs the image_shape of its pseudo-inputs.")
    self.pseudo_inputs = self.param(
      "pseudo_inputs",
      _normal_init(self.pseudo_init_mean, self.pseudo_init_std),
      (self.num_pseudo_inputs, *self.image_shape),
    )

  def pseudo_images(self) -> jax.Array:
    """The K pseudo-inputs as the encoder sees them, [K, H, W, C] in [0, 1] (the Hardtanh)."""
    return jnp.clip(self.pseudo_inputs, 0.0, 1.0)

  def prior_components(self) -> tuple[jax.Array, jax.Array]:
    """(means, log-variances) [K, latent_dim] of the prior's components q(z|u_k)."""
    posterior = self.encode(self.pseudo_images())
    return posterior.mean, posterior.logvar

  def prior_log_density(self, z: jax.Array) -> jax.Array:
    """log p(z) = logsumexp_k log q(z|u_k) - log K of each row of z [batch, d], [batch]."""
    return mixture_log_density(z, *self.prior_components())

  def __call__(self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """Encodes, samples z = mu + sigma * eps (one key per example), decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: ignored (the model is unconditional).

    Returns:
      The decoder output, the sample z, its `log_q_z` and its VampPrior `log_p_z` [batch];
      `stats` holds the posterior `mu` and `logvar`.
    """
    del y
    posterior = self.encode(x)
    mu, logvar = posterior.mean, posterior.logvar
    z = distributions.reparameterize(mu, logvar, keys)
    return ModelOutput(
      out=self.decode(z),
      z=z,
      log_q_z=distributions.gaussian_log_density(z, mu, logvar),
      log_p_z=self.prior_log_density(z),
      log_sigma=self.log_sigma if self.learn_sigma else None,
      stats={"mu": mu, "logvar": logvar},
    )

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` draws: a pseudo-input k uniformly, then z ~ q(z|u_k).

    `temperature` scales the chosen component's standard deviation (0 decodes its mean).
    """
    del y
    pick_key, noise_key = jax.random.split(rng)
    means, logvars = self.prior_components()
    k = jax.random.randint(pick_key, (num,), 0, self.num_pseudo_inputs)
    eps = jax.random.normal(noise_key, (num, self.latent_dim))
    z = means[k] + temperature * jnp.exp(0.5 * logvars[k]) * eps
    return self.decode(z)
