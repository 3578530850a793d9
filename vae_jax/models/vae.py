"""Gaussian-posterior VAE (Kingma & Welling 2014), and its class-conditional form (CVAE)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.losses import distributions
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.bodies import Head, build_bodies


class VAE(Model):
  """q(z|x) = N(mu, diag(exp(logvar))), p(z) = N(0, I), p(x|z) given by the decoder output.

  Attributes:
    encoder: body mapping (x, cond) to features.
    decoder: body mapping (z, cond) to per-pixel likelihood parameters (logits or means).
    latent_dim: size of z.
    num_classes: > 0 makes the model conditional: the one-hot label joins encoder and decoder.
    learn_sigma: adds a learned scalar observation log-std (for the learned-sigma Gaussian).
    init_scheme: initialisation of the head ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True, joint_density=True)

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  num_classes: int = 0
  learn_sigma: bool = False
  init_scheme: str = "flax"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "VAE":
    """The VAE of `config.model` (the shared body, latent and likelihood fields)."""
    return cls(**vae_kwargs(config, data.image_shape))

  def setup(self):  # noqa: D102
    self.posterior_head = Head(2 * self.latent_dim, self.init_scheme)
    if self.learn_sigma:
      self.log_sigma = self.param("log_sigma", nn.initializers.zeros, ())

  def _cond(self, y: jax.Array | None) -> jax.Array | None:
    if not self.num_classes:
      return None
    if y is None:
      raise ValueError("A conditional model needs labels y.")
    return jax.nn.one_hot(y, self.num_classes)

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """The posterior mean and log-variance, each [batch, latent_dim]."""
    mu, logvar = jnp.split(self.posterior_head(self.encoder(x, self._cond(y))), 2, axis=-1)
    return Posterior(mu, logvar)

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The decoder output (likelihood parameters) of the image's shape."""
    return self.decoder(z, self._cond(y))

  def __call__(self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """Encodes, samples z = mu + sigma * eps with eps drawn from one key per example, decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: integer labels [batch] (conditional models only).

    Returns:
      The decoder output, the sample z, the analytic KL per dimension, the sample's log q(z|x)
      and log p(z); `stats` holds the posterior `mu` and `logvar`.
    """
    posterior = self.encode(x, y)
    mu, logvar = posterior.mean, posterior.logvar
    z = distributions.reparameterize(mu, logvar, keys)
    return ModelOutput(
      out=self.decode(z, y),
      z=z,
      kl_per_dim=distributions.kl_standard_normal(mu, logvar),
      log_q_z=distributions.gaussian_log_density(z, mu, logvar),
      log_p_z=distributions.standard_normal_log_density(z),
      log_sigma=self.log_sigma if self.learn_sigma else None,
      stats={"mu": mu, "logvar": logvar},
    )

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` draws z ~ N(0, temperature^2 I) from the prior."""
    z = temperature * jax.random.normal(rng, (num, self.latent_dim))
    return self.decode(z, y)

  def prior_sample(self, keys: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """z ~ N(0, I) [batch, latent_dim], one draw per key."""
    del y
    return distributions.standard_normal_noise(keys, self.latent_dim)

  def log_prior(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """log N(z; 0, I) [batch]."""
    del y
    return distributions.standard_normal_log_density(z)

  def decode_latent(self, z: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """The decoder output and the learned observation log-std (if any) at z."""
    log_sigma = self.log_sigma if self.learn_sigma else None
    return ModelOutput(out=self.decode(z, y), z=z, log_sigma=log_sigma)


class CVAE(VAE):
  """The VAE conditioned on the class label (Sohn et al. 2015): y joins encoder and decoder."""

  capabilities = Capabilities(
    conditional=True, density=True, prior=True, gaussian_posterior=True, joint_density=True
  )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "CVAE":
    """The conditional VAE of `config.model` for a dataset with `data.num_classes` labels."""
    return cls(**vae_kwargs(config, data.image_shape), num_classes=data.num_classes)


def vae_kwargs(config: ml_collections.ConfigDict, image_shape) -> dict:
  """The `VAE` fields every Gaussian-posterior family shares, from `config.model`."""
  encoder, decoder = build_bodies(config, image_shape)
  return dict(
    encoder=encoder,
    decoder=decoder,
    latent_dim=config.latent_dim,
    learn_sigma=config.likelihood == "gaussian_learned",
    init_scheme=config.init_scheme,
  )
