"""FactorVAE (Kim & Mnih 2018): a VAE plus gamma * TC, the TC estimated by a discriminator.

A discriminator D tells samples of the aggregate posterior q(z) (class 0) from samples of the
product of its marginals (class 1, each latent dimension permuted independently across the batch).
Its logits give the density ratio, TC ~ E_q(z)[logit_0(z) - logit_1(z)], which the VAE minimises
while D minimises its cross-entropy. Both are trained in the same step by one gradient: `batch_loss`
returns gamma * TC (D's parameters under stop_gradient, so only the VAE gets its gradient) plus D's
cross-entropy on stop_gradient(z) (so only D gets its gradient). D has its own Adam
(`param_optimizers`, settings `model.factorvae.discriminator_*`) for `params['discriminator']`.

Two simplifications, both disentanglement_lib's (`factor_vae` in methods/unsupervised/vae.py): the
permuted samples come from the same batch as the VAE's (the paper draws a second batch), and the VAE
and D update together from the same forward pass (the paper updates D after the VAE). The
permutation runs over the GLOBAL batch with the step's batch key, so it is the same on any number of
devices.

`encode`, `decode`, `generate` and the forward pass are the inner VAE's (params['vae']), so
evaluation and the tools read a FactorVAE like a VAE.
"""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_sizes
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.vae import VAE


class Discriminator(nn.Module):
  """MLP from z to 2 logits (q(z), product of marginals); the paper's: 6 x 1000, leaky ReLU 0.2.

  `frozen=True` applies the same parameters under stop_gradient: the output still has a gradient
  with respect to z, but none reaches the parameters.
  """

  hidden_sizes: Sequence[int] = (1000,) * 6
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, z: jnp.ndarray, frozen: bool = False) -> jnp.ndarray:  # noqa: D102
    h = z
    sizes = (*self.hidden_sizes, 2)
    for i, size in enumerate(sizes):
      kernel = self.param(f"kernel_{i}", nn.initializers.lecun_normal(), (h.shape[-1], size))
      bias = self.param(f"bias_{i}", nn.initializers.zeros, (size,))
      if frozen:
        kernel, bias = jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(bias)
      h = h @ kernel + bias
      if i < len(sizes) - 1:
        h = nn.leaky_relu(h, self.negative_slope)
    return h


DISCRIMINATOR = "discriminator"  # The params key of D, which has its own optimizer.


def permute_dims(z: jnp.ndarray, rng: jax.Array) -> jnp.ndarray:
  """Permutes each column of z [B, D] independently across the batch; column d uses fold_in(rng, d).

  The rows are then samples of the product of the batch's marginals.
  """
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(z.shape[1]))
  perms = jax.vmap(lambda k: jax.random.permutation(k, z.shape[0]))(keys)
  return jnp.take_along_axis(z, perms.T, axis=0)


def discriminator_terms(logits_real: jnp.ndarray, logits_permuted: jnp.ndarray) -> dict:
  """Per-example cross-entropy and correctness of D on real (class 0) and permuted (class 1) z."""
  logp_real = jax.nn.log_softmax(logits_real)
  logp_perm = jax.nn.log_softmax(logits_permuted)
  return {
    "real_nll": -logp_real[:, 0],
    "permuted_nll": -logp_perm[:, 1],
    "real_correct": (logits_real[:, 0] > logits_real[:, 1]).astype(logits_real.dtype),
    "permuted_correct": (logits_permuted[:, 1] > logits_permuted[:, 0]).astype(logits_real.dtype),
  }


class FactorVAE(Model):
  """A VAE (params['vae']) and a TC discriminator (params['discriminator']).

  Attributes:
    vae: the inner VAE.
    gamma: weight of the TC penalty.
    discriminator_hidden_sizes: hidden layer widths of the discriminator MLP.
  """

  capabilities = Capabilities(
    density=True, prior=True, batch_loss=True, gaussian_posterior=True, joint_density=True
  )

  vae: VAE
  gamma: float = 35.0
  discriminator_hidden_sizes: Sequence[int] = (1000,) * 6

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """gamma, the discriminator's widths and its own Adam (Kim & Mnih 2018's settings)."""
    return ml_collections.ConfigDict(
      {
        "gamma": 35.0,
        "discriminator_hidden_sizes": (1000,) * 6,
        "discriminator_learning_rate": 1e-4,
        "discriminator_b1": 0.5,
        "discriminator_b2": 0.9,
      }
    )

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """gamma >= 0, positive widths and learning rate."""
    c = config.model.factorvae
    require(c.gamma >= 0, f"model.factorvae.gamma={c.gamma} must be >= 0.")
    require_sizes(
      c.discriminator_hidden_sizes, "model.factorvae.discriminator_hidden_sizes", allow_empty=True
    )
    require(
      c.discriminator_learning_rate > 0,
      f"model.factorvae.discriminator_learning_rate={c.discriminator_learning_rate} must be > 0.",
    )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "FactorVAE":
    """The inner VAE of `config.model` and the discriminator of `config.model.factorvae`."""
    c = config.factorvae
    return cls(
      VAE.from_config(config, data),
      gamma=c.gamma,
      discriminator_hidden_sizes=tuple(c.discriminator_hidden_sizes),
    )

  @classmethod
  def param_optimizers(
    cls, config: ml_collections.ConfigDict
  ) -> Mapping[str, optax.GradientTransformation]:
    """D's own Adam (constant rate, no clipping) for `params['discriminator']`."""
    c = config.factorvae
    return {
      DISCRIMINATOR: optax.adam(
        c.discriminator_learning_rate, b1=c.discriminator_b1, b2=c.discriminator_b2
      )
    }

  def setup(self):  # noqa: D102
    self.discriminator = Discriminator(tuple(self.discriminator_hidden_sizes))

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """The inner VAE's posterior."""
    return self.vae.encode(x, y)

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The inner VAE's decoder output."""
    return self.vae.decode(z, y)

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of prior draws (the inner VAE's sampler)."""
    return self.vae.generate(rng, num, y, temperature)

  def prior_sample(self, keys: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The inner VAE's prior draws."""
    return self.vae.prior_sample(keys, y)

  def log_prior(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The inner VAE's log p(z)."""
    return self.vae.log_prior(z, y)

  def decode_latent(self, z: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """The inner VAE's p(x|z)."""
    return self.vae.decode_latent(z, y)

  def __call__(self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None) -> ModelOutput:
    """The inner VAE's forward pass (see `VAE.__call__`)."""
    outputs = self.vae(x, keys, y)
    if self.is_initializing():
      self.discriminator(outputs.z)
    return outputs

  def discriminator_logits(self, z: jax.Array, frozen: bool = False) -> jax.Array:
    """D's logits [B, 2] of latents z [B, D]."""
    return self.discriminator(z, frozen)

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """gamma * TC (VAE's gradient only) plus D's cross-entropy (D's gradient only).

    Args:
      outputs: the forward pass's outputs on this device's shard (`z` is used).
      collectives: global-batch reductions.
      rng: the step's batch key, the same on every device: it draws the permutations.
      mask: [batch] 0 for padding rows, which the TC and the real-sample loss leave out (the
        permuted samples are drawn from the whole gathered batch); None: all rows are real.

    Each device runs D on its own rows of the batch and of its permutation, so D's work shrinks
    with the number of devices.
    """
    z = outputs.z
    mean = _mean_over(collectives, mask)
    logits = self.discriminator(z, frozen=True)
    tc = mean(logits[:, 0] - logits[:, 1])
    real = jax.lax.stop_gradient(z)
    # The permutation runs over the global batch; each device scores its own rows of it.
    permuted = permute_dims(collectives.gather(real), rng)[collectives.rows(z.shape[0])]
    terms = discriminator_terms(self.discriminator(real), self.discriminator(permuted))
    real_nll, real_correct = (mean(terms[k]) for k in ("real_nll", "real_correct"))
    permuted_nll, permuted_correct = (
      collectives.mean(terms[k].mean()) for k in ("permuted_nll", "permuted_correct")
    )
    d_loss = 0.5 * (real_nll + permuted_nll)
    accuracy = 0.5 * (real_correct + permuted_correct)
    metrics = {"tc_estimate": tc, "discriminator_loss": d_loss, "discriminator_accuracy": accuracy}
    return self.gamma * tc + d_loss, metrics


def _mean_over(collectives: Collectives, mask: jax.Array | None):
  """The global-batch mean of per-example values, over the rows whose mask is 1."""
  if mask is None:
    return lambda v: collectives.mean(jnp.mean(v))
  return lambda v: collectives.mean(jnp.sum(v * mask)) / collectives.mean(jnp.sum(mask))
