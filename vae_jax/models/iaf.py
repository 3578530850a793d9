"""VAE with an inverse autoregressive flow posterior (Kingma et al. 2016).

The encoder gives a diagonal Gaussian N(mu, exp(logvar)) and a context vector h; z_0 = mu + sigma *
eps is pushed through K IAF steps (`made.IAFFlow`) conditioned on h. The posterior density of the
flow's output is log q(z_K|x) = log N(eps; 0, I) - sum log sigma_0 - sum_k sum log sigma_k, and the
KL is the single-sample Monte Carlo estimate log q(z_K|x) - log p(z_K) with p = N(0, I), so the
model reports `log_q_z` and `log_p_z` and no `kl_per_dim`.

`encode` returns the flow applied to the base mean with zero noise (z_K at eps = 0, the point the
decoder sees for a "mean" code, so reconstructions and latent tools work in the decoder's space) and
the BASE Gaussian's log-variance (only a diagonal summary: the flow posterior is not diagonal).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_sizes
from vae_jax.losses import distributions
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.bodies import Head, build_bodies
from vae_jax.models.made import IAFFlow


class IAFVAE(Model):
  """q(z|x) = IAF flow of N(mu, diag(exp(logvar))), p(z) = N(0, I), p(x|z) from the decoder.

  Attributes:
    encoder: body mapping x to features.
    decoder: body mapping z to per-pixel likelihood parameters.
    latent_dim: size of z.
    num_steps: number of IAF steps K.
    made_hidden_sizes: hidden layer widths of each step's MADE.
    context_dim: size of the context h the encoder passes to every MADE; 0 for none.
    learn_sigma: adds a learned scalar observation log-std (for the learned-sigma Gaussian).
    init_scheme: initialisation of the encoder head ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True, joint_density=True)

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  num_steps: int
  made_hidden_sizes: Sequence[int]
  context_dim: int = 0
  learn_sigma: bool = False
  init_scheme: str = "flax"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """steps: IAF steps K; hidden_sizes: each MADE's layers; context_dim: h's size (0: none)."""
    return ml_collections.ConfigDict({"steps": 2, "hidden_sizes": (320, 320), "context_dim": 32})

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """At least one step and one hidden layer; sizes >= 1, context >= 0."""
    c = config.model.iaf
    require(c.steps >= 1, f"model.iaf.steps={c.steps} must be >= 1.")
    require_sizes(c.hidden_sizes, "model.iaf.hidden_sizes")
    require(c.context_dim >= 0, f"model.iaf.context_dim={c.context_dim} must be >= 0.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "IAFVAE":
    """The IAF-posterior VAE of `config.model` and `config.model.iaf`."""
    encoder, decoder = build_bodies(config, data.image_shape)
    c = config.iaf
    return cls(
      encoder,
      decoder,
      config.latent_dim,
      num_steps=c.steps,
      made_hidden_sizes=tuple(c.hidden_sizes),
      context_dim=c.context_dim,
      learn_sigma=config.likelihood == "gaussian_learned",
      init_scheme=config.init_scheme,
    )

  def setup(self):  # noqa: D102
    self.posterior_head = Head(2 * self.latent_dim + self.context_dim, self.init_scheme)
    self.flow = IAFFlow(self.num_steps, tuple(self.made_hidden_sizes))
    if self.learn_sigma:
      self.log_sigma = self.param("log_sigma", nn.initializers.zeros, ())

  def base_posterior(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray | None]:
    """(mu, logvar, context) of the base Gaussian; context is None when `context_dim` is 0."""
    params = self.posterior_head(self.encoder(x))
    d = self.latent_dim
    context = params[:, 2 * d :] if self.context_dim else None
    return params[:, :d], params[:, d : 2 * d], context

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None) -> Posterior:
    """(z_K at zero noise, base log-variance), each [batch, latent_dim] (see the module doc)."""
    del y
    mu, logvar, context = self.base_posterior(x)
    return Posterior(self.flow(mu, context)[0], logvar)

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns the decoder output (likelihood parameters) of the image's shape."""
    del y
    return self.decoder(z)

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> ModelOutput:
    """Samples z_0 from the base Gaussian (one key per example), applies the flow, decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: ignored (the model is unconditional).

    Returns:
      The decoder output, the flow's sample `z`, the sample's `log_q_z` (including the flow's
      log-determinant) and `log_p_z` [batch]; `stats` holds the base `z0`, `mu` and `logvar`.
    """
    del y
    mu, logvar, context = self.base_posterior(x)
    z0 = distributions.reparameterize(mu, logvar, keys)
    z, log_det = self.flow(z0, context)
    return ModelOutput(
      out=self.decoder(z),
      z=z,
      log_q_z=distributions.gaussian_log_density(z0, mu, logvar) - log_det,
      log_p_z=distributions.standard_normal_log_density(z),
      log_sigma=self.log_sigma if self.learn_sigma else None,
      stats={"z0": z0, "mu": mu, "logvar": logvar},
    )

  def generate(
    self, rng: jax.Array, num: int, y: jnp.ndarray | None = None, temperature: float = 1.0
  ) -> jnp.ndarray:
    """Decoder outputs of `num` draws z ~ N(0, temperature^2 I) from the prior."""
    del y
    return self.decoder(temperature * jax.random.normal(rng, (num, self.latent_dim)))

  def prior_sample(self, keys: jax.Array, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """z ~ N(0, I) [batch, latent_dim], one draw per key."""
    del y
    return distributions.standard_normal_noise(keys, self.latent_dim)

  def log_prior(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """log N(z; 0, I) [batch]."""
    del y
    return distributions.standard_normal_log_density(z)

  def decode_latent(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> ModelOutput:
    """The decoder output and the learned observation log-std (if any) at z."""
    del y
    log_sigma = self.log_sigma if self.learn_sigma else None
    return ModelOutput(out=self.decoder(z), z=z, log_sigma=log_sigma)
