"""FactorVAE (Kim & Mnih 2018): a VAE plus gamma * TC, the TC estimated by a discriminator.

A discriminator D tells samples of the aggregate posterior q(z) (class 0) from samples of the
product of its marginals (class 1, each latent dimension permuted independently across the batch).
Its logits give the density ratio, TC ~ E_q(z)[logit_0(z) - logit_1(z)], which the VAE minimises
while D minimises its cross-entropy. Both are trained in the same step by one gradient: `batch_loss`
returns gamma * TC (D's parameters under stop_gradient, so only the VAE gets its gradient) plus D's
cross-entropy on stop_gradient(z) (so only D gets its gradient). D has its own Adam through
`optim.make_optimizer` (`optimizer.discriminator_*`), which updates `params['discriminator']`.

Two simplifications, both disentanglement_lib's (`factor_vae` in methods/unsupervised/vae.py): the
permuted samples come from the same batch as the VAE's (the paper draws a second batch), and the VAE
and D update together from the same forward pass (the paper updates D after the VAE). The
permutation runs over the GLOBAL batch with the step's batch key, so it is the same on any number of
devices.

`encode`, `decode`, `generate` and the forward pass are the inner VAE's (params['vae']), so
evaluation and the tools read a FactorVAE like a VAE.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.models.vae import VAE
from vae_jax.parallel import Collectives


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


class FactorVAE(nn.Module):
  """A VAE (params['vae']) and a TC discriminator (params['discriminator']).

  Attributes:
    vae: the inner VAE.
    gamma: weight of the TC penalty.
    discriminator_hidden_sizes: hidden layer widths of the discriminator MLP.
  """

  vae: VAE
  gamma: float = 35.0
  discriminator_hidden_sizes: Sequence[int] = (1000,) * 6

  def setup(self):  # noqa: D102
    # The attribute name is the params key that `optim.param_groups` gives D's optimizer.
    self.discriminator = Discriminator(tuple(self.discriminator_hidden_sizes))

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None):
    """The inner VAE's posterior mean and log-variance."""
    return self.vae.encode(x, y)

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """The inner VAE's decoder output."""
    return self.vae.decode(z, y)

  def generate(
    self, rng: jax.Array, num: int, y: jnp.ndarray | None = None, temperature: float = 1.0
  ) -> jnp.ndarray:
    """Decoder outputs of prior draws (the inner VAE's sampler)."""
    return self.vae.generate(rng, num, y, temperature)

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> dict:
    """The inner VAE's forward pass (see `VAE.__call__`)."""
    outputs = self.vae(x, keys, y)
    if self.is_initializing():
      self.discriminator(outputs["z"])
    return outputs

  def discriminator_logits(self, z: jnp.ndarray, frozen: bool = False) -> jnp.ndarray:
    """D's logits [B, 2] of latents z [B, D]."""
    return self.discriminator(z, frozen)

  def batch_loss(
    self, outputs: dict, collectives: Collectives, rng: jax.Array
  ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """gamma * TC (VAE's gradient only) plus D's cross-entropy (D's gradient only).

    Args:
      outputs: the forward pass's outputs on this device's shard (`z` is used).
      collectives: global-batch reductions.
      rng: the step's batch key, the same on every device: it draws the permutations.
    """
    z = outputs["z"]
    logits = self.discriminator(z, frozen=True)
    tc = collectives.mean(jnp.mean(logits[:, 0] - logits[:, 1]))
    real = jax.lax.stop_gradient(z)
    permuted = permute_dims(collectives.gather(real), rng)
    terms = discriminator_terms(self.discriminator(real), self.discriminator(permuted))
    real_nll, real_correct = (
      collectives.mean(terms[k].mean()) for k in ("real_nll", "real_correct")
    )
    d_loss = 0.5 * (real_nll + terms["permuted_nll"].mean())
    accuracy = 0.5 * (real_correct + terms["permuted_correct"].mean())
    metrics = {"tc_estimate": tc, "discriminator_loss": d_loss, "discriminator_accuracy": accuracy}
    return self.gamma * tc + d_loss, metrics
