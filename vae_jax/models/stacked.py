"""A VAE with stacked stochastic layers and bottom-up inference (Burda et al. 2015's architecture).

Generative model, layers bottom (nearest x) first: p(z_L) = N(0, I), p(z_i | z_{i+1}) a diagonal
Gaussian from an MLP of z_{i+1}, p(x | z_1) from the decoder body. Inference is bottom-up:
q(z_1 | x) from the encoder body and q(z_{i+1} | z_i) from an MLP of the sampled z_i. This is the
parameterisation of the IWAE paper's two-stochastic-layer models (784-200-200-100 for the first
layer, 100-100-50 above it, tanh units, Bernoulli observations), unlike the ladder VAE of
`hvae.py`, whose inference runs top-down. The KL is the sample's Monte Carlo estimate
log q(z|x) - log p(z) (densities of every layer), so the model trains with the ELBO averaged over
k samples or with the IWAE bound and has an importance-weighted likelihood.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import require_sizes
from vae_jax.losses.distributions import gaussian_log_density, standard_normal_log_density
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.bodies import ACTIVATIONS, Head, build_bodies, dense


class _MLP(nn.Module):
  """Dense layers with the chosen activation."""

  sizes: Sequence[int]
  activation: str = "tanh"
  init_scheme: str = "flax"

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    for size in self.sizes:
      h = ACTIVATIONS[self.activation](dense(size, h, self.init_scheme)(h))
    return h


def _gaussian(head: nn.Module, h: jax.Array) -> tuple[jax.Array, jax.Array]:
  mu, logvar = jnp.split(head(h), 2, axis=-1)
  return mu, logvar


class StackedVAE(Model):
  """Stochastic layers `latent_dims` (bottom first) with bottom-up inference.

  Attributes:
    encoder: body mapping x to the features of q(z_1 | x).
    decoder: body mapping z_1 to per-pixel likelihood parameters.
    latent_dims: size of each stochastic layer, bottom first; the last is the top, the code that
      `encode` returns.
    hidden_sizes: the MLP of each q(z_{i+1} | z_i) and each p(z_i | z_{i+1}).
    activation: their nonlinearity ('tanh' or 'relu').
    init_scheme: initialisation ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True)

  encoder: nn.Module
  decoder: nn.Module
  latent_dims: Sequence[int]
  hidden_sizes: Sequence[int] = (100, 100)
  activation: str = "tanh"
  init_scheme: str = "flax"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """lower_dims: z_1 .. z_{L-1} below the top (model.latent_dim); hidden_sizes: layer MLPs."""
    return ml_collections.ConfigDict({"lower_dims": (100,), "hidden_sizes": (100, 100)})

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """At least one layer below the top; sizes are whole numbers >= 1."""
    require_sizes(config.model.stacked.lower_dims, "model.stacked.lower_dims")
    require_sizes(config.model.stacked.hidden_sizes, "model.stacked.hidden_sizes")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "StackedVAE":
    """The stacked VAE of `config.model`: the bodies for z_1, `stacked.*` above it."""
    encoder, decoder = build_bodies(config, data.image_shape)
    return cls(
      encoder,
      decoder,
      latent_dims=(*config.stacked.lower_dims, config.latent_dim),
      hidden_sizes=tuple(config.stacked.hidden_sizes),
      activation=config.get("activation", "tanh"),
      init_scheme=config.init_scheme,
    )

  def setup(self):  # noqa: D102
    dims, init = self.latent_dims, self.init_scheme
    mlp = lambda: _MLP(tuple(self.hidden_sizes), self.activation, init)  # noqa: E731
    self.q_heads = [Head(2 * d, init) for d in dims]
    self.q_nets = [mlp() for _ in dims[1:]]
    self.p_nets = [mlp() for _ in dims[:-1]]
    self.p_heads = [Head(2 * d, init) for d in dims[:-1]]

  def posterior(self, i: int, below: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu, logvar) of q(z_i | below): below is x's features for i = 0, else z_{i-1}."""
    h = below if i == 0 else self.q_nets[i - 1](below)
    return _gaussian(self.q_heads[i], h)

  def prior(self, i: int, z_above: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu, logvar) of p(z_i | z_{i+1}) for a layer below the top."""
    return _gaussian(self.p_heads[i], self.p_nets[i](z_above))

  def layer_means(self, x: jax.Array) -> list[Posterior]:
    """Each layer's posterior, bottom first, passing posterior means upwards (no noise)."""
    below, out = self.encoder(x), []
    for i in range(len(self.latent_dims)):
      mu, logvar = self.posterior(i, below)
      out.append(Posterior(mu, logvar))
      below = mu
    return out

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """The top layer's posterior, with the means of the layers below passed up."""
    del y
    return self.layer_means(x)[-1]

  def _down(self, z_top: jax.Array, noise: list[jax.Array | None]) -> list[jax.Array]:
    """Every layer's z below the top, ancestrally: p's mean plus its std times `noise[i]`."""
    zs = [z_top]
    for i in reversed(range(len(self.latent_dims) - 1)):
      mu, logvar = self.prior(i, zs[0])
      zs.insert(0, mu if noise[i] is None else mu + jnp.exp(0.5 * logvar) * noise[i])
    return zs

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """Decoder output for a top-layer z, the layers below at their prior means."""
    del y
    return self.decoder(self._down(z, [None] * len(self.latent_dims))[0])

  def __call__(self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """Samples every layer bottom-up from one key per example, and decodes z_1.

    Returns:
      The decoder output, the top layer's sample `z`, the joint `log_q_z` and `log_p_z` over the
      layers, `extra_terms` with each layer's Monte Carlo KL `kl_layer_<i>`, and in `stats` the
      top layer's posterior `mu`, `logvar`, every layer's sample `z_layer_<i>` (bottom first) and
      its posterior mean `mu_layer_<i>` given the sample below.
    """
    del y
    dims = self.latent_dims
    eps = jax.vmap(lambda k: jax.random.normal(k, (sum(dims),)).astype(x.dtype))(keys)
    offsets = [sum(dims[:i]) for i in range(len(dims))]
    below, zs, posts = self.encoder(x), [], []
    for i, d in enumerate(dims):
      mu, logvar = self.posterior(i, below)
      zs.append(mu + jnp.exp(0.5 * logvar) * eps[:, offsets[i] : offsets[i] + d])
      posts.append((mu, logvar))
      below = zs[-1]
    log_q = [gaussian_log_density(z, *post) for z, post in zip(zs, posts, strict=True)]
    log_p = [gaussian_log_density(zs[i], *self.prior(i, zs[i + 1])) for i in range(len(dims) - 1)]
    log_p.append(standard_normal_log_density(zs[-1]))
    return ModelOutput(
      out=self.decoder(zs[0]),
      z=zs[-1],
      log_q_z=sum(log_q),
      log_p_z=sum(log_p),
      extra_terms={
        f"kl_layer_{i}": q - p for i, (q, p) in enumerate(zip(log_q, log_p, strict=True))
      },
      stats={
        "mu": posts[-1][0],
        "logvar": posts[-1][1],
        **{f"z_layer_{i}": z for i, z in enumerate(zs)},
        **{f"mu_layer_{i}": post[0] for i, post in enumerate(posts)},
      },
    )

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` ancestral samples, every layer's noise scaled by `temperature`."""
    del y
    keys = jax.random.split(rng, len(self.latent_dims))
    z_top = temperature * jax.random.normal(keys[-1], (num, self.latent_dims[-1]))
    noise = [
      temperature * jax.random.normal(keys[i], (num, d))
      for i, d in enumerate(self.latent_dims[:-1])
    ]
    return self.decoder(self._down(z_top, [*noise, None])[0])
