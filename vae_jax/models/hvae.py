"""Hierarchical VAE with top-down inference: the ladder VAE (Sønderby et al. 2016).

Generative model (layers indexed bottom-up, layer 0 nearest the data, layer L-1 the top):
p(z_{L-1}) = N(0, I), p(z_i | z_{i+1}) = N(mu_p, diag(exp(logvar_p))) from a small network of
z_{i+1}, and p(x | z_0, ..., z_{L-1}) from the shared decoder body applied to every layer's z
concatenated (skip connections, as in the top-down decoders of the IAF paper and NVAE; on MNIST at
3 epochs this gave a 2 nats better ELBO than the ladder VAE's p(x | z_0), -109.8 vs -112.0, by
letting the top layer reach x directly). Inference runs bottom-up first (the shared
encoder body, then one Dense+ReLU layer per layer above) to Gaussian "likelihood" terms
N(mu_hat_i, exp(logvar_hat_i)); then top-down, q(z_{L-1}|x) = N(mu_hat_{L-1}, ...) and each lower
q(z_i | z_{i+1}, x) is the precision-weighted merge of N(mu_hat_i, .) with the prior
p(z_i | z_{i+1}) evaluated at the sampled z_{i+1}.

The training KL is analytic per layer given the sampled parents, KL(q(z_i|z_{i+1},x) ||
p(z_i|z_{i+1})), summed over layers: an unbiased estimate of KL(q(z|x) || p(z)) with lower variance
than log q - log p. `kl_per_dim` concatenates the per-layer KLs in top-down order (the top layer's
dimensions first, so its first `latent_dim` entries line up with the code `encode` returns);
`extra_terms` holds each layer's total as `kl_layer_<i>`. `log_q_z` and `log_p_z` are the joint
densities over all layers of the sampled z's, for the IWAE objective and the importance-weighted
NLL.

For annealed importance sampling the whole latent is every layer's z concatenated, bottom first
(`prior_sample`, `log_prior` = the joint log p(z_0, ..., z_{L-1}), `decode_latent`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_sizes
from vae_jax.losses.distributions import (
  gaussian_kl,
  gaussian_log_density,
  standard_normal_log_density,
  standard_normal_noise,
)
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.bodies import Head, build_bodies, dense


def precision_weighted(
  mu_a: jnp.ndarray, logvar_a: jnp.ndarray, mu_b: jnp.ndarray, logvar_b: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The normalised product of two diagonal Gaussians: precisions add, means weight by precision."""
  logvar = -jnp.logaddexp(-logvar_a, -logvar_b)
  weight_a = jax.nn.sigmoid(logvar_b - logvar_a)  # = precision_a / (precision_a + precision_b)
  return weight_a * mu_a + (1.0 - weight_a) * mu_b, logvar


class _Hidden(nn.Module):
  """One Dense+ReLU layer."""

  features: int
  init_scheme: str = "flax"

  @nn.compact
  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    return nn.relu(dense(self.features, h, self.init_scheme, name="Dense_0")(h))


class HVAE(Model):
  """Ladder VAE with `len(latent_dims)` >= 2 stochastic layers.

  Attributes:
    encoder: body mapping x to the bottom-up features of layer 0.
    decoder: body mapping all layers' z (concatenated, bottom first) to per-pixel likelihood
      parameters.
    latent_dims: size of each stochastic layer, bottom (nearest x) first; the last is the top, whose
      posterior `encode` returns.
    hidden_size: width of the Dense+ReLU layer in each bottom-up step and each prior network.
    learn_sigma: adds a learned scalar observation log-std (for the learned-sigma Gaussian).
    init_scheme: initialisation of the dense layers ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(density=True, prior=True, gaussian_posterior=True, joint_density=True)

  encoder: nn.Module
  decoder: nn.Module
  latent_dims: Sequence[int]
  hidden_size: int
  learn_sigma: bool = False
  init_scheme: str = "flax"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """lower_dims: sizes of z_0 .. z_{L-2} (bottom first; model.latent_dim is the top layer).

    hidden: the Dense+ReLU width of each bottom-up step and prior network.
    """
    return ml_collections.ConfigDict({"lower_dims": (64,), "hidden": 256})

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """At least one lower layer; every size >= 1."""
    c = config.model.hvae
    require_sizes(c.lower_dims, "model.hvae.lower_dims")
    require(c.hidden >= 1, f"model.hvae.hidden={c.hidden} must be >= 1.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "HVAE":
    """The ladder VAE of `config.model`: layers `hvae.lower_dims` below a `latent_dim` top."""
    encoder, decoder = build_bodies(config, data.image_shape)
    return cls(
      encoder,
      decoder,
      latent_dims=(*config.hvae.lower_dims, config.latent_dim),
      hidden_size=config.hvae.hidden,
      learn_sigma=config.likelihood == "gaussian_learned",
      init_scheme=config.init_scheme,
    )

  def setup(self):  # noqa: D102
    if len(self.latent_dims) < 2:
      raise ValueError(f"HVAE needs at least two stochastic layers, got {self.latent_dims}.")
    dims, hidden, init = self.latent_dims, self.hidden_size, self.init_scheme
    self.up = [_Hidden(hidden, init) for _ in dims[1:]]
    self.up_heads = [Head(2 * d, init) for d in dims]
    self.down = [_Hidden(hidden, init) for _ in dims[:-1]]
    self.prior_heads = [Head(2 * d, init) for d in dims[:-1]]
    if self.learn_sigma:
      self.log_sigma = self.param("log_sigma", nn.initializers.zeros, ())

  def _bottom_up(self, x: jnp.ndarray) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """(mu_hat, logvar_hat) of every layer, bottom first."""
    h = self.encoder(x)
    params = []
    for i, head in enumerate(self.up_heads):
      if i:
        h = self.up[i - 1](h)
      mu, logvar = jnp.split(head(h), 2, axis=-1)
      params.append((mu, logvar))
    return params

  def prior(self, i: int, z_above: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(mu, logvar) of p(z_i | z_{i+1}) for a layer i below the top."""
    mu, logvar = jnp.split(self.prior_heads[i](self.down[i](z_above)), 2, axis=-1)
    return mu, logvar

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None) -> Posterior:
    """Mean and log-variance of the top layer's posterior q(z_{L-1}|x), each [batch, d_top]."""
    del y
    return Posterior(*self._bottom_up(x)[-1])

  def _decode_layers(self, zs: list[jnp.ndarray]) -> jnp.ndarray:
    """Decoder output given every layer's z, bottom first."""
    return self.decoder(jnp.concatenate(zs, axis=-1))

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Decoder output for a top-layer z, the layers below it set to their prior means."""
    del y
    zs = [z]
    for i in reversed(range(len(self.latent_dims) - 1)):
      zs.insert(0, self.prior(i, zs[0])[0])
    return self._decode_layers(zs)

  def _layers(self, z: jnp.ndarray) -> list[jnp.ndarray]:
    """A whole latent [batch, sum(latent_dims)] split into its layers, bottom first."""
    bounds = [sum(self.latent_dims[:i]) for i in range(1, len(self.latent_dims))]
    return jnp.split(z, bounds, axis=-1)

  def prior_sample(self, keys: jax.Array, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Ancestral draws of every layer, concatenated bottom first: [batch, sum(latent_dims)]."""
    del y
    zs = self._layers(standard_normal_noise(keys, sum(self.latent_dims)))
    for i in reversed(range(len(self.latent_dims) - 1)):
      mu, logvar = self.prior(i, zs[i + 1])
      zs[i] = mu + jnp.exp(0.5 * logvar) * zs[i]
    return jnp.concatenate(zs, axis=-1)

  def log_prior(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """The joint log p(z_{L-1}) + sum_i log p(z_i | z_{i+1}) [batch] of a whole latent."""
    del y
    zs = self._layers(z)
    total = standard_normal_log_density(zs[-1])
    for i in range(len(self.latent_dims) - 1):
      total = total + gaussian_log_density(zs[i], *self.prior(i, zs[i + 1]))
    return total

  def decode_latent(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> ModelOutput:
    """The decoder output given every layer of a whole latent, and the learned log-std if any."""
    del y
    log_sigma = self.log_sigma if self.learn_sigma else None
    return ModelOutput(out=self._decode_layers(self._layers(z)), z=z, log_sigma=log_sigma)

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> ModelOutput:
    """Bottom-up pass, then samples every layer top-down from one key per example, and decodes.

    Args:
      x: images [batch, H, W, C] in [0, 1].
      keys: one PRNG key per example, [batch].
      y: ignored (the model is unconditional).

    Returns:
      The decoder output, the top layer's sample `z`, the analytic `kl_per_dim` (all layers, top
      first), the joint `log_q_z` and `log_p_z` [batch], `extra_terms` with `kl_layer_<i>`
      [batch], and the top layer's posterior `mu`, `logvar` in `stats`.
    """
    del y
    dims, top = self.latent_dims, len(self.latent_dims) - 1
    up = self._bottom_up(x)
    eps = jax.vmap(lambda k: jax.random.normal(k, (sum(dims),)).astype(x.dtype))(keys)
    offsets = [sum(dims[:i]) for i in range(len(dims))]
    zs, kls, log_q, log_p = [None] * len(dims), [None] * len(dims), 0.0, 0.0
    for i in reversed(range(len(dims))):
      if i == top:
        mu_q, logvar_q = up[i]
        mu_p, logvar_p = jnp.zeros_like(mu_q), jnp.zeros_like(logvar_q)
      else:
        mu_p, logvar_p = self.prior(i, zs[i + 1])
        mu_q, logvar_q = precision_weighted(*up[i], mu_p, logvar_p)
      zs[i] = mu_q + jnp.exp(0.5 * logvar_q) * eps[:, offsets[i] : offsets[i] + dims[i]]
      kls[i] = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
      log_q = log_q + gaussian_log_density(zs[i], mu_q, logvar_q)
      log_p = log_p + gaussian_log_density(zs[i], mu_p, logvar_p)
    return ModelOutput(
      out=self._decode_layers(zs),
      z=zs[top],
      kl_per_dim=jnp.concatenate(kls[::-1], axis=-1),
      log_q_z=log_q,
      log_p_z=log_p,
      log_sigma=self.log_sigma if self.learn_sigma else None,
      extra_terms={f"kl_layer_{i}": kl.sum(axis=-1) for i, kl in enumerate(kls)},
      stats={"mu": up[top][0], "logvar": up[top][1]},
    )

  def generate(
    self, rng: jax.Array, num: int, y: jnp.ndarray | None = None, temperature: float = 1.0
  ) -> jnp.ndarray:
    """Decoder outputs of `num` ancestral samples, every layer's noise scaled by `temperature`."""
    del y
    keys = jax.random.split(rng, len(self.latent_dims))
    zs = [temperature * jax.random.normal(keys[-1], (num, self.latent_dims[-1]))]
    for i in reversed(range(len(self.latent_dims) - 1)):
      mu, logvar = self.prior(i, zs[0])
      zs.insert(0, mu + temperature * jnp.exp(0.5 * logvar) * jax.random.normal(keys[i], mu.shape))
    return self._decode_layers(zs)
