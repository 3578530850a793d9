"""WAE-MMD (Tolstikhin et al. 2018, "Wasserstein auto-encoders"): an autoencoder with an MMD prior.

A deterministic encoder's codes are pulled to the prior N(0, I) by lambda * MMD(q(z), p(z)).

The loss is the reconstruction cost -log p(x|z) (the step's ELBO terms with no KL) plus
`batch_loss` = mmd_weight * MMD_u^2 between the codes of the GLOBAL batch and as many draws from
the prior (`losses.mmd`). The codes are gathered over the devices and the prior draws come from the
step's batch key (row i from fold_in(key, i)), so the loss does not depend on the device count.
The paper's squared Euclidean cost, scaled by 0.05 as in the authors' code, is the Gaussian
likelihood with `gaussian_sigma=sqrt(10)` up to a constant (see configs/mnist_wae.py).

The parameters are the autoencoder's, so every tool that reads an autoencoder reads a WAE; unlike
the autoencoder it has a prior to sample. The helpers at the bottom are shared with InfoVAE.
"""

import jax
import ml_collections

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_choice
from vae_jax.losses import mmd
from vae_jax.models.autoencoder import Autoencoder
from vae_jax.models.base import Capabilities, ModelOutput
from vae_jax.models.bodies import build_bodies

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # The WAE authors' released code.


class WAE(Autoencoder):
  """The `Autoencoder` plus a prior N(0, I) and a batch loss on MMD(codes, prior draws).

  Attributes:
    mmd_weight: lambda, the weight of the MMD term (10 in the paper's MNIST and CelebA runs).
    kernel: 'imq' or 'rbf' (`losses.mmd.KERNELS`).
    scales: bandwidth multipliers of C = 2 d the kernel is summed over.
  """

  capabilities = Capabilities(prior=True, batch_loss=True)

  mmd_weight: float = 10.0
  kernel: str = "imq"
  scales: tuple[float, ...] = IMQ_SCALES

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """lambda, the kernel and its scales (the paper's IMQ kernel over the authors' scales)."""
    return mmd_family_config(10.0, "imq", IMQ_SCALES)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """See `validate_mmd`."""
    validate_mmd(config, "wae")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "WAE":
    """The WAE of `config.model`'s bodies and latent size and `config.model.wae`."""
    encoder, decoder = build_bodies(config, data.image_shape)
    return cls(
      encoder,
      decoder,
      config.latent_dim,
      init_scheme=config.init_scheme,
      **mmd_fields(config.wae),
    )

  def generate(
    self, rng: jax.Array, num: int, y: jax.Array | None = None, temperature: float = 1.0
  ) -> jax.Array:
    """Decoder outputs of `num` draws z ~ N(0, temperature^2 I) from the prior."""
    z = temperature * jax.random.normal(rng, (num, self.latent_dim))
    return self.decode(z, y)

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mmd_weight * MMD_u^2 of the global batch's codes and the prior (see `prior_mmd_loss`)."""
    return prior_mmd_loss(self, outputs, collectives, rng, mask)


def mmd_family_config(weight: float, kernel: str, scales) -> ml_collections.ConfigDict:
  """The fields of a family with an MMD term: `mmd_weight`, `kernel`, `scales`."""
  return ml_collections.ConfigDict(
    {"mmd_weight": weight, "kernel": kernel, "scales": tuple(scales)}
  )


def mmd_fields(config: ml_collections.ConfigDict) -> dict:
  """The module fields of a family's MMD sub-config."""
  return dict(
    mmd_weight=config.mmd_weight, kernel=config.kernel, scales=tuple(map(float, config.scales))
  )


def validate_mmd(config: ml_collections.ConfigDict, name: str) -> None:
  """mmd_weight >= 0, a known kernel, positive scales, and two examples per batch."""
  c = config.model[name]
  require(c.mmd_weight >= 0, f"model.{name}.mmd_weight={c.mmd_weight} must be >= 0.")
  require_choice(c.kernel, mmd.KERNELS, f"model.{name}.kernel")
  scales = tuple(c.scales) if isinstance(c.scales, tuple | list) else (c.scales,)
  numbers = all(isinstance(s, int | float) and not isinstance(s, bool) for s in scales)
  require(
    numbers and scales and all(s > 0 for s in scales),
    f"model.{name}.scales={c.scales!r} must be a tuple of numbers > 0, e.g. (1.0,).",
  )
  require(
    config.data.batch_size >= 2,
    f"model.name={name!r} estimates an MMD over the batch: data.batch_size must be >= 2.",
  )


def prior_mmd_loss(
  model,
  outputs: ModelOutput,
  collectives: Collectives,
  rng: jax.Array,
  mask: jax.Array | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """model.mmd_weight * MMD_u^2 between the gathered z and prior draws from `rng`, and the MMD.

  Padding rows (mask 0) are left out of the estimate.
  """
  z = collectives.gather(outputs.z)
  mask = None if mask is None else collectives.gather(mask)
  value = mmd.prior_mmd(z, rng, model.kernel, model.scales, mask)
  return model.mmd_weight * value, {"mmd": value}
