"""Planar-flow VAE (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

Each step is f(z) = z + u' h(w^T z + b) with h = tanh. Its Jacobian is I + u' psi(z)^T with
psi(z) = h'(w^T z + b) w, so log|det df/dz| = log|1 + u'^T psi(z)| (matrix determinant lemma).
f is invertible when w^T u' >= -1; u' is the paper's reparameterisation of a free u,
u' = u + (m(w^T u) - w^T u) w / ||w||^2 with m(x) = -1 + softplus(x), which makes w^T u' =
m(w^T u) > -1 for every u and w != 0.

The flow parameters are amortised, as in the paper: the encoder head gives the base Gaussian
N(mu, exp(logvar)) and, per example, (u_k, w_k, b_k) of every step k. z_0 = mu + sigma * eps
goes through the K steps; log q(z_K|x) = log N(z_0; mu, exp(logvar)) - sum_k log|det_k|, and the
KL is the single-sample Monte Carlo estimate log q(z_K|x) - log p(z_K) with p = N(0, I): the model
reports `log_q_z` and `log_p_z` and no `kl_per_dim`.

`encode` returns the flow applied to the base mean with zero noise (z_K at eps = 0, a point in the
decoder's space, as the IAF family does) and the BASE Gaussian's log-variance.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import require
from vae_jax.losses import distributions
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.bodies import Head, build_bodies


def constrained_u(u: jax.Array, w: jax.Array) -> jax.Array:
  """u' = u + (m(w^T u) - w^T u) w / ||w||^2, m(x) = -1 + softplus(x), over the last axis.

  w = 0 leaves u unchanged (the step is then a translation, invertible for any u).
  """
  wu = jnp.sum(w * u, axis=-1, keepdims=True)
  norm2 = jnp.sum(jnp.square(w), axis=-1, keepdims=True)
  # Where w = 0 the correction is 0 * w; a safe denominator keeps it (and its gradient) finite.
  safe_norm2 = jnp.where(norm2 > 0, norm2, 1.0)
  return u + (jax.nn.softplus(wu) - 1.0 - wu) * w / safe_norm2


def planar_step(
  z: jax.Array, u: jax.Array, w: jax.Array, b: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """One planar step f(z) = z + u' tanh(w^T z + b) and its log|det df/dz|.

  Args:
    z: points [..., d].
    u: the free (unconstrained) u [..., d].
    w: [..., d].
    b: [...].

  Returns:
    (f(z) [..., d], log|1 + u'^T psi(z)| [...]).
  """
  u_hat = constrained_u(u, w)
  h = jnp.tanh(jnp.sum(w * z, axis=-1) + b)
  log_det = jnp.log(jnp.abs(1.0 + (1.0 - jnp.square(h)) * jnp.sum(w * u_hat, axis=-1)))
  return z + u_hat * h[..., None], log_det


def planar_flow(
  z: jax.Array, u: jax.Array, w: jax.Array, b: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """K planar steps in order: z [batch, d], u and w [batch, K, d], b [batch, K].

  Returns:
    (z_K [batch, d], sum_k log|det_k| [batch]).
  """
  log_det = jnp.zeros(z.shape[:-1], z.dtype)
  for k in range(u.shape[-2]):
    z, step_log_det = planar_step(z, u[..., k, :], w[..., k, :], b[..., k])
    log_det = log_det + step_log_det
  return z, log_det


class PlanarVAE(Model):
  """q(z|x) = K amortised planar steps of N(mu, diag(exp(logvar))), p(z) = N(0, I).

  Attributes:
    encoder: body mapping x to features.
    decoder: body mapping z to per-pixel likelihood parameters.
    latent_dim: size of z.
    num_flows: number of planar steps K.
    learn_sigma: adds a learned scalar observation log-std (for the learned-sigma Gaussian).
    init_scheme: initialisation of the encoder head ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True)

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  num_flows: int
  learn_sigma: bool = False
  init_scheme: str = "flax"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """flows: the number of planar steps K."""
    return ml_collections.ConfigDict({"flows": 10})

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """At least one step."""
    k = config.model.planar.flows
    require(k >= 1, f"model.planar.flows={k} must be >= 1.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "PlanarVAE":
    """The planar-flow VAE of `config.model` and `config.model.planar`."""
    encoder, decoder = build_bodies(config, data.image_shape)
    return cls(
      encoder,
      decoder,
      config.latent_dim,
      num_flows=config.planar.flows,
      learn_sigma=config.likelihood == "gaussian_learned",
      init_scheme=config.init_scheme,
    )

  def setup(self):  # noqa: D102
    d, k = self.latent_dim, self.num_flows
    self.posterior_head = Head(2 * d + k * (2 * d + 1), self.init_scheme)
    if self.learn_sigma:
      self.log_sigma = self.param("log_sigma", nn.initializers.zeros, ())

  def posterior_params(self, x: jax.Array) -> tuple[jax.Array, ...]:
    """(mu, logvar) [batch, d] of the base Gaussian, the flow's u, w [batch, K, d], b [batch, K]."""
    d, k = self.latent_dim, self.num_flows
    params = self.posterior_head(self.encoder(x))
    mu, logvar = params[:, :d], params[:, d : 2 * d]
    u, w = jnp.split(params[:, 2 * d : 2 * d + 2 * k * d].reshape(-1, k, 2 * d), 2, axis=-1)
    return mu, logvar, u, w, params[:, 2 * d + 2 * k * d :]

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """(z_K at zero noise, base log-variance), each [batch, latent_dim] (see the module doc)."""
    del y
    mu, logvar, u, w, b = self.posterior_params(x)
    return Posterior(planar_flow(mu, u, w, b)[0], logvar)

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The decoder output (likelihood parameters) of the image's shape."""
    del y
    return self.decoder(z)

  def __call__(self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """Samples z_0 from the base Gaussian (one key per example), applies the flow, decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: ignored (the model is unconditional).

    Returns:
      The decoder output, the flow's sample `z`, the sample's `log_q_z` (the base density minus
      the summed log-determinants) and `log_p_z` [batch]; `stats` holds `z0`, `mu` and `logvar`.
    """
    del y
    mu, logvar, u, w, b = self.posterior_params(x)
    z0 = distributions.reparameterize(mu, logvar, keys)
    z, log_det = planar_flow(z0, u, w, b)
    return ModelOutput(
      out=self.decoder(z),
      z=z,
      log_q_z=distributions.gaussian_log_density(z0, mu, logvar) - log_det,
      log_p_z=distributions.standard_normal_log_density(z),
      log_sigma=self.log_sigma if self.learn_sigma else None,
      stats={"z0": z0, "mu": mu, "logvar": logvar},
    )

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` draws z ~ N(0, temperature^2 I) from the prior."""
    del y
    return self.decoder(temperature * jax.random.normal(rng, (num, self.latent_dim)))
