"""Gumbel-softmax (concrete) VAE: N categorical latents of K classes with a uniform prior.

Jang et al. 2017 ("Categorical reparameterization with Gumbel-softmax") and Maddison et al. 2017
("The concrete distribution"). The encoder gives logits [batch, N, K]; q(z|x) is a product of N
categoricals softmax(logits) and p(z) is uniform over the K^N codes.

Training (the forward pass gets the training step) decodes the relaxed one-hot sample
y = softmax((logits + g) / tau_t), g ~ Gumbel(0, 1) from the example's key, with the annealed
temperature tau_t = max(tau_min, tau_0 exp(-r t)) (t: the step, rounded down to a multiple of
`anneal_every`, as Jang et al. update tau every N steps); with `straight_through` the decoder sees
one_hot(argmax y) and the gradient is that of y (the ST Gumbel-softmax). Outside training (no step:
evaluation, the IW likelihood) the decoder sees the exact discrete sample one_hot(argmax(logits +
g)), so the test ELBO and IW estimates are those of the discrete model, not of its relaxation.

The KL is analytic, to the uniform categorical: KL(q || U) = sum_k q_k log(q_k K) per variable
(`kl_per_dim`, [batch, N]), as in Jang et al.; Maddison et al. instead use a Monte Carlo KL of the
relaxed (concrete) densities, which is not implemented. The training objective is therefore
E_y[log p(x|y)] - KL(q || U) with y relaxed. `log_q_z` and `log_p_z` are those of the discrete
sample argmax(logits + g) (the IW likelihood's weights); relaxed samples have no weights under q,
so `objective.estimator='iwae'` is refused.

The flat code (`z`, `encode(...).mean`, `decode`'s input) is [batch, N * K], variable-major; the
posterior mean is the class probabilities. See `codes.CategoricalCodes` for what the latent tools
do with it.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.data.spec import DataSpec
from vae_jax.errors import require
from vae_jax.losses import categorical
from vae_jax.models import codes
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior
from vae_jax.models.bodies import Head, build_bodies


class GumbelVAE(Model):
  """Categorical latents trained through the Gumbel-softmax relaxation.

  Attributes:
    encoder: body mapping x to features.
    decoder: body mapping the flat code [batch, N * K] to per-pixel likelihood parameters.
    num_variables: N, the number of categorical latents (`config.model.latent_dim`).
    num_classes: K, the classes of each.
    temperature: tau_0, the relaxation's temperature at step 0.
    min_temperature: tau_min, the floor of the annealed temperature.
    anneal_rate: r in tau_t = max(tau_min, tau_0 exp(-r t)); 0 keeps tau_0.
    anneal_every: tau changes only at multiples of this many steps.
    straight_through: decode one_hot(argmax y) in training, with the gradient of y.
    init_scheme: initialisation of the logits head ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(density=True, prior=True, takes_step=True)

  encoder: nn.Module
  decoder: nn.Module
  num_variables: int
  num_classes: int = 10
  temperature: float = 1.0
  min_temperature: float = 0.5
  anneal_rate: float = 1e-4
  anneal_every: int = 500
  straight_through: bool = False
  init_scheme: str = "flax"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """K and the temperature schedule (see the attributes); N is `config.model.latent_dim`.

    The schedule is one point of Jang et al.'s grid (r in {1e-5, 1e-4}, N in {500, 1000}).
    """
    return ml_collections.ConfigDict(
      {
        "num_classes": 10,
        "temperature": 1.0,
        "min_temperature": 0.5,
        "anneal_rate": 1e-4,
        "anneal_every": 500,
        "straight_through": False,
      }
    )

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """K >= 2, 0 < tau_min <= tau_0, r >= 0, anneal_every >= 1, the ELBO estimator."""
    c = config.model.gumbel
    require(c.num_classes >= 2, f"model.gumbel.num_classes={c.num_classes} must be >= 2.")
    require(c.temperature > 0, f"model.gumbel.temperature={c.temperature} must be > 0.")
    require(
      0 < c.min_temperature <= c.temperature,
      f"model.gumbel.min_temperature={c.min_temperature} must be in (0, model.gumbel.temperature"
      f"={c.temperature}].",
    )
    require(c.anneal_rate >= 0, f"model.gumbel.anneal_rate={c.anneal_rate} must be >= 0.")
    require(c.anneal_every >= 1, f"model.gumbel.anneal_every={c.anneal_every} must be >= 1.")
    require(
      config.objective.estimator == "elbo",
      "objective.estimator='iwae' needs importance weights of the training samples; "
      "model.name='gumbel' trains on relaxed samples, which have none: use 'elbo'.",
    )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "GumbelVAE":
    """The model of `config.model`: its bodies, N = `latent_dim` and `config.model.gumbel`."""
    encoder, decoder = build_bodies(config, data.image_shape)
    c = config.gumbel
    return cls(
      encoder,
      decoder,
      num_variables=config.latent_dim,
      num_classes=c.num_classes,
      temperature=c.temperature,
      min_temperature=c.min_temperature,
      anneal_rate=c.anneal_rate,
      anneal_every=c.anneal_every,
      straight_through=c.straight_through,
      init_scheme=config.init_scheme,
    )

  def setup(self):  # noqa: D102
    self.logits_head = Head(self.num_variables * self.num_classes, self.init_scheme)

  def logits(self, x: jax.Array) -> jax.Array:
    """The posterior logits [batch, N, K] of images x."""
    h = self.logits_head(self.encoder(x))
    return h.reshape(x.shape[0], self.num_variables, self.num_classes)

  def temperature_at(self, step) -> jax.Array:
    """The annealed temperature tau_t at training step `step`."""
    return categorical.annealed_temperature(
      step, self.temperature, self.min_temperature, self.anneal_rate, self.anneal_every
    )

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> Posterior:
    """The class probabilities softmax(logits), flattened to [batch, N * K]."""
    del y
    probs = jax.nn.softmax(self.logits(x), axis=-1)
    return Posterior(probs.reshape(x.shape[0], -1))

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The decoder output for flat codes z [batch, N * K] (one-hot, relaxed or probabilities)."""
    del y
    return self.decoder(z)

  def __call__(
    self, x: jax.Array, keys: jax.Array, y: jax.Array | None = None, step=None
  ) -> ModelOutput:
    """Encodes, samples one code per example (relaxed when `step` is given), decodes.

    Args:
      x: images [batch, H, W, C].
      keys: one PRNG key per example; the Gumbel noise [N, K] of example i comes from keys[i].
      y: unused.
      step: the training step (relaxed samples at tau_step); None: exact one-hot samples.

    Returns:
      The decoder output, the decoded code `z` [batch, N * K], `kl_per_dim` [batch, N],
      `log_q_z` and `log_p_z` of the discrete sample, `extra_terms['temperature']` (training
      only) and `stats['logits']` [batch, N, K].
    """
    del y
    logits = self.logits(x)
    batch, n, k = logits.shape
    perturbed = logits + categorical.gumbel_noise(keys, (n, k), logits.dtype)
    classes = jnp.argmax(perturbed, axis=-1)
    extra = {}
    if step is None:
      z = jax.nn.one_hot(classes, k, dtype=logits.dtype)
    else:
      tau = self.temperature_at(step)
      z = categorical.relaxed_one_hot(perturbed, tau)
      if self.straight_through:
        z = categorical.straight_through(z)
      extra["temperature"] = jnp.full((batch,), tau, logits.dtype)
    z = z.reshape(batch, n * k)
    return ModelOutput(
      out=self.decode(z),
      z=z,
      kl_per_dim=categorical.kl_uniform(logits),
      log_q_z=categorical.log_prob(logits, classes).sum(axis=-1),
      log_p_z=jnp.full((batch,), -n * math.log(k), logits.dtype),
      extra_terms=extra,
      stats={"logits": logits},
    )

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` codes from the uniform prior: each variable's class uniformly.

    `temperature` (a scale of a Gaussian prior) does not apply to the uniform prior; ignored.
    """
    del y, temperature
    classes = jax.random.randint(rng, (num, self.num_variables), 0, self.num_classes)
    z = jax.nn.one_hot(classes, self.num_classes).reshape(num, -1)
    return self.decode(z)

  def code_space(self) -> codes.CategoricalCodes:
    """N categorical variables of K classes (see `codes.CategoricalCodes`)."""
    return codes.CategoricalCodes(self.num_variables, self.num_classes)
