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

from vae_jax import objectives
from vae_jax.models.bodies import Head
from vae_jax.models.made import IAFFlow


class IAFVAE(nn.Module):
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

  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  num_steps: int
  made_hidden_sizes: Sequence[int]
  context_dim: int = 0
  learn_sigma: bool = False
  init_scheme: str = "flax"

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

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(z_K at zero noise, base log-variance), each [batch, latent_dim] (see the module doc)."""
    del y
    mu, logvar, context = self.base_posterior(x)
    return self.flow(mu, context)[0], logvar

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Returns the decoder output (likelihood parameters) of the image's shape."""
    del y
    return self.decoder(z)

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> dict:
    """Samples z_0 from the base Gaussian (one key per example), applies the flow, decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: ignored (the model is unconditional).

    Returns:
      Dict with decoder output `out`, the flow's sample `z`, the base `z0`, `mu`, `logvar`, the
      sample's `log_q_z` (including the flow's log-determinant) and `log_p_z` [batch], and
      `log_sigma` when the observation noise is learned.
    """
    del y
    mu, logvar, context = self.base_posterior(x)
    eps = jax.vmap(lambda k: jax.random.normal(k, (self.latent_dim,), mu.dtype))(keys)
    z0 = mu + jnp.exp(0.5 * logvar) * eps
    z, log_det = self.flow(z0, context)
    outputs = {
      "out": self.decoder(z),
      "z": z,
      "z0": z0,
      "mu": mu,
      "logvar": logvar,
      "log_q_z": objectives.gaussian_log_density(z0, mu, logvar) - log_det,
      "log_p_z": objectives.standard_normal_log_density(z),
    }
    if self.learn_sigma:
      outputs["log_sigma"] = self.log_sigma
    return outputs

  def generate(
    self, rng: jax.Array, num: int, y: jnp.ndarray | None = None, temperature: float = 1.0
  ) -> jnp.ndarray:
    """Decoder outputs of `num` draws z ~ N(0, temperature^2 I) from the prior."""
    del y
    return self.decoder(temperature * jax.random.normal(rng, (num, self.latent_dim)))
