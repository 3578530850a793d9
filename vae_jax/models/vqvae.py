"""VQ-VAE (van den Oord et al. 2017): encoder outputs snapped to the nearest of K learned codes.

The encoder maps an image to L code-sized vectors z_e (a grid of H/2^n x W/2^n positions with
`SpatialConvEncoder`, or `latent_dim` vectors from an MLP); each is replaced by its nearest codebook
row z_q, and the decoder reconstructs from z_q. Gradients pass the quantizer straight through
(z = z_e + sg[z_q - z_e]). The per-example `aux_loss` is beta * ||z_e - sg[z_q]||^2 (commitment)
plus, when the codebook is learned by gradient, ||sg[z_e] - z_q||^2 (codebook loss), both summed
over positions and code dimensions like the reconstruction log-likelihood is summed over pixels.

With `codebook_update='ema'` the codebook is not a parameter: the forward pass in training updates
exponential moving averages (collection `vq_ema`) of each code's share of assignments
(`cluster_size`, summing to 1) and of the mean encoder output assigned to it (`embed_sum`), and the
codebook is embed_sum / cluster_size with Laplace-smoothed cluster sizes (as in Sonnet). Both are
batch means, linear in the batch, so the train step's `pmean` over devices gives exactly the
global-batch update. They start as if every code had been used equally often at its initial
position, so a code nobody picks stays put while its share decays.

The prior over codes is uniform and factorised (family `vqvae_prior` learns a PixelCNN prior),
so KL(q(z|x) || p(z)) = log K per position for the deterministic posterior: the model reports
`kl_per_dim` = log K for each of the L positions, a constant that moves the loss but not its
gradient, and makes `elbo` = recon - L log K a true (loose) bound on log p(x) under that prior.

Flattened codes (`z`, `encode`, `decode`) are channel-major, [batch, D * L]: coordinate j < L is
the first code dimension at position j, so a traversal of "latent j" probes position j.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from vae_jax.collectives import Collectives
from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_choice
from vae_jax.models import bodies
from vae_jax.models.base import Capabilities, Model, ModelOutput, Posterior

CODEBOOK_UPDATES = ("loss", "ema")
EMA_COLLECTION = "vq_ema"


def nearest_codes(z: jnp.ndarray, codebook: jnp.ndarray) -> jnp.ndarray:
  """Index of the codebook row [K, D] nearest to each vector z [..., D] (ties: lowest index)."""
  cross = jnp.matmul(z, codebook.T, precision=lax.Precision.HIGHEST)
  d2 = jnp.sum(z**2, axis=-1, keepdims=True) - 2.0 * cross + jnp.sum(codebook**2, axis=-1)
  return jnp.argmin(d2, axis=-1)


def ema_update(
  cluster_size: jnp.ndarray,
  embed_sum: jnp.ndarray,
  usage: jnp.ndarray,
  assigned_mean: jnp.ndarray,
  decay: float,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """One step of the moving averages.

  Args:
    cluster_size: [K] EMA share of assignments per code.
    embed_sum: [K, D] EMA of the batch mean of one_hot(code) * z_e.
    usage: [K] this batch's share of positions assigned to each code.
    assigned_mean: [K, D] this batch's mean over positions of one_hot(code) * z_e.
    decay: EMA decay.

  Returns:
    The updated (cluster_size, embed_sum).
  """
  return (
    decay * cluster_size + (1.0 - decay) * usage,
    decay * embed_sum + (1.0 - decay) * assigned_mean,
  )


def ema_codebook(cluster_size: jnp.ndarray, embed_sum: jnp.ndarray, epsilon: float) -> jnp.ndarray:
  """embed_sum / n_k with Laplace-smoothed sizes n_k = (c_k + eps) / (n + K eps) * n, n = sum c."""
  n = jnp.sum(cluster_size)
  smoothed = (cluster_size + epsilon) / (n + cluster_size.shape[0] * epsilon) * n
  return embed_sum / smoothed[:, None]


def perplexity(usage: jnp.ndarray) -> jnp.ndarray:
  """exp(entropy) of code shares [K] summing to 1: K for uniform use, 1 for a single code."""
  return jnp.exp(-jnp.sum(jax.scipy.special.xlogy(usage, usage)))


def restart_dead_codes(
  cluster_size: jnp.ndarray,
  embed_sum: jnp.ndarray,
  candidates: jnp.ndarray,
  rng: jax.Array,
  threshold: float,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Moves codes whose EMA share is below threshold / K onto random rows of `candidates` [N, D].

  A restarted code gets the initial share 1/K, so it survives ~log(threshold)/log(decay) steps
  unused before it is restarted again.

  Returns:
    (cluster_size, embed_sum, number of codes restarted).
  """
  k = cluster_size.shape[0]
  n = candidates.shape[0]
  dead = cluster_size < threshold / k
  picks = candidates[jax.random.choice(rng, n, (k,), replace=n < k)]
  return (
    jnp.where(dead, 1.0 / k, cluster_size),
    jnp.where(dead[:, None], picks / k, embed_sum),
    jnp.sum(dead),
  )


def _uniform_codebook_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jnp.ndarray:
  """U(+-sqrt(3 / D)): code vectors of about unit norm (Sonnet's variance scaling)."""
  limit = math.sqrt(3.0 / shape[-1])
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def _flatten(v: jnp.ndarray) -> jnp.ndarray:
  """[batch, L, D] -> channel-major [batch, D * L]."""
  return jnp.swapaxes(v, 1, 2).reshape(v.shape[0], -1)


def _sum_squares(v: jnp.ndarray) -> jnp.ndarray:
  return jnp.sum(jnp.square(v), axis=(1, 2))


class VQVAE(Model):
  """Vector-quantised autoencoder with a uniform prior over codes.

  Attributes:
    encoder: body mapping x to a grid [batch, *latent_shape, code_dim] (spatial) or to features
      (MLP; a dense head then makes the L code vectors).
    decoder: body mapping the quantized grid (spatial) or the flattened codes (MLP) to per-pixel
      likelihood parameters.
    latent_shape: (h, w) of the code grid for spatial bodies, (L,) for MLP bodies.
    num_codes: codebook size K.
    code_dim: code vector size D.
    commitment_cost: beta, the weight of the commitment loss.
    codebook_update: 'loss' (codebook loss and the optimizer) or 'ema' (moving averages).
    ema_decay: decay of the moving averages.
    ema_epsilon: Laplace smoothing of the EMA cluster sizes (in units of assignment shares).
    dead_code_restart: 'ema' only: `batch_loss` moves codes whose EMA share fell below
      dead_code_threshold / K onto random encoder outputs of the global batch.
    dead_code_threshold: see `dead_code_restart`.
    init_scheme: initialisation of the MLP head ('flax' or 'pytorch', see `bodies`).
  """

  capabilities = Capabilities(prior=True, batch_loss=True, mutable=(EMA_COLLECTION,))

  encoder: nn.Module
  decoder: nn.Module
  latent_shape: tuple[int, ...]
  num_codes: int = 512
  code_dim: int = 64
  commitment_cost: float = 0.25
  codebook_update: str = "loss"
  ema_decay: float = 0.99
  ema_epsilon: float = 1e-5
  dead_code_restart: bool = False
  dead_code_threshold: float = 0.05
  init_scheme: str = "flax"

  @classmethod
  def family_config(cls) -> ml_collections.ConfigDict:
    """The codebook, its update rule and dead-code restarts (see the attributes)."""
    return ml_collections.ConfigDict(
      {
        "num_codes": 512,
        "code_dim": 64,
        "commitment_cost": 0.25,
        "codebook_update": "loss",
        "ema_decay": 0.99,
        "ema_epsilon": 1e-5,
        "dead_code_restart": False,
        "dead_code_threshold": 0.05,
      }
    )

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """'mlp' or 'conv' bodies, sizes >= 1, a known update rule, decay in [0, 1), EMA restarts."""
    arch = config.model.arch
    require(arch in ("mlp", "conv"), f"model.arch={arch!r}: VQ-VAE has 'mlp' and 'conv' bodies.")
    c = config.model.vqvae
    for field in ("num_codes", "code_dim"):
      require(c[field] >= 1, f"model.vqvae.{field}={c[field]} must be >= 1.")
    require_choice(c.codebook_update, CODEBOOK_UPDATES, "model.vqvae.codebook_update")
    for field in ("commitment_cost", "dead_code_threshold"):
      require(c[field] >= 0, f"model.vqvae.{field}={c[field]} must be >= 0.")
    require(0 <= c.ema_decay < 1, f"model.vqvae.ema_decay={c.ema_decay} must be in [0, 1).")
    require(c.ema_epsilon > 0, f"model.vqvae.ema_epsilon={c.ema_epsilon} must be > 0.")
    require(
      not c.dead_code_restart or c.codebook_update == "ema",
      "model.vqvae.dead_code_restart needs model.vqvae.codebook_update='ema' (restarts use EMA "
      "usage).",
    )

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, data: DataSpec) -> "VQVAE":
    """A VQ-VAE from `config.model`: 'conv' gives a code grid, 'mlp' gives `latent_dim` codes."""
    return build(config, data.image_shape)

  def setup(self):  # noqa: D102
    k, d = self.num_codes, self.code_dim
    if self.codebook_update == "ema":
      self.cluster_size = self.variable(EMA_COLLECTION, "cluster_size", jnp.full, (k,), 1.0 / k)
      self.embed_sum = self.variable(
        EMA_COLLECTION,
        "embed_sum",
        lambda: _uniform_codebook_init(self.make_rng("params"), (k, d)) / k,
      )
    elif self.codebook_update == "loss":
      self.codebook_param = self.param("codebook", _uniform_codebook_init, (k, d))
    else:
      raise ValueError(f"Unknown codebook_update {self.codebook_update!r}; {CODEBOOK_UPDATES}.")
    if not self._spatial:
      self.code_head = bodies.Head(self.num_latents * d, self.init_scheme)

  @property
  def _spatial(self) -> bool:
    return len(self.latent_shape) == 2

  @property
  def num_latents(self) -> int:
    """L, the number of code vectors per image."""
    return math.prod(self.latent_shape)

  def codebook(self) -> jnp.ndarray:
    """The current codebook [K, D]."""
    if self.codebook_update == "ema":
      return ema_codebook(self.cluster_size.value, self.embed_sum.value, self.ema_epsilon)
    return self.codebook_param

  def _encode_vectors(self, x: jnp.ndarray) -> jnp.ndarray:
    h = self.encoder(x)
    if not self._spatial:
      h = self.code_head(h)
    return h.reshape(x.shape[0], self.num_latents, self.code_dim)

  def _decode_vectors(self, v: jnp.ndarray) -> jnp.ndarray:
    if self._spatial:
      return self.decoder(v.reshape(v.shape[0], *self.latent_shape, self.code_dim))
    return self.decoder(v.reshape(v.shape[0], -1))

  def _unflatten(self, z: jnp.ndarray) -> jnp.ndarray:
    return jnp.swapaxes(z.reshape(z.shape[0], self.code_dim, self.num_latents), 1, 2)

  def code_indices(self, x: jnp.ndarray) -> jnp.ndarray:
    """The index of the code nearest each encoder output: [batch, L], grid positions row-major."""
    return nearest_codes(self._encode_vectors(x), self.codebook())

  def code_vectors(self, codes: jnp.ndarray) -> jnp.ndarray:
    """The codebook rows of code indices [batch, L], flattened channel-major to [batch, D * L]."""
    return _flatten(self.codebook()[codes])

  def encode(self, x: jnp.ndarray, y: jnp.ndarray | None = None) -> Posterior:
    """The continuous encoder output z_e, flattened channel-major to [batch, D * L]."""
    del y
    return Posterior(_flatten(self._encode_vectors(x)))

  def decode(self, z: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """Quantizes flattened vectors z [batch, D * L] to their nearest codes and decodes them."""
    del y
    codebook = self.codebook()
    v = self._unflatten(z)
    return self._decode_vectors(codebook[nearest_codes(v, codebook)])

  def __call__(self, x: jnp.ndarray, keys: jax.Array, y: jnp.ndarray | None = None) -> ModelOutput:
    """Encodes, quantizes (straight-through), decodes; the EMA codebook learns when mutable.

    Args:
      x: images [batch, H, W, C].
      keys: per-example keys; unused (the model is deterministic).
      y: unused.

    Returns:
      The decoder output, the quantized codes `z` [batch, D * L], `kl_per_dim` = log K per
      position [batch, L], `extra_terms` with `aux_loss`, `commitment_loss` and
      (codebook_update='loss') `codebook_loss`, each [batch]; `stats` holds the encoder output
      `z_e` [batch, D * L] and `code_usage` [batch, K] (each example's share of positions per code).
    """
    del keys, y
    z_e = self._encode_vectors(x)
    codebook = self.codebook()
    onehot = jax.nn.one_hot(nearest_codes(z_e, codebook), self.num_codes, dtype=z_e.dtype)
    z_q = jnp.einsum("blk,kd->bld", onehot, codebook, precision=lax.Precision.HIGHEST)
    if (
      self.codebook_update == "ema"
      and self.is_mutable_collection(EMA_COLLECTION)
      and not self.is_initializing()
    ):
      positions = z_e.shape[0] * z_e.shape[1]
      assigned = jnp.einsum(
        "blk,bld->kd", onehot, lax.stop_gradient(z_e), precision=lax.Precision.HIGHEST
      )
      self.cluster_size.value, self.embed_sum.value = ema_update(
        self.cluster_size.value,
        self.embed_sum.value,
        onehot.mean(axis=(0, 1)),
        assigned / positions,
        self.ema_decay,
      )
    commitment = self.commitment_cost * _sum_squares(z_e - lax.stop_gradient(z_q))
    extra = {"commitment_loss": commitment, "aux_loss": commitment}
    if self.codebook_update == "loss":
      extra["codebook_loss"] = _sum_squares(lax.stop_gradient(z_e) - z_q)
      extra["aux_loss"] = commitment + extra["codebook_loss"]
    z = z_e + lax.stop_gradient(z_q - z_e)
    batch = x.shape[0]
    return ModelOutput(
      out=self._decode_vectors(z),
      z=_flatten(z),
      kl_per_dim=jnp.full((batch, self.num_latents), math.log(self.num_codes), z_e.dtype),
      extra_terms=extra,
      stats={"z_e": _flatten(z_e), "code_usage": onehot.mean(axis=1)},
    )

  def batch_loss(
    self,
    outputs: ModelOutput,
    collectives: Collectives,
    rng: jax.Array,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """No extra loss; codebook statistics of the global batch and, optionally, code restarts.

    Logs `perplexity` (exp of the entropy of the global batch's code shares) and
    `codes_used_share` (share of the K codes picked at least once). With dead-code restarts (EMA
    only, when the EMA collection is mutable, i.e. in training) the per-device EMA statistics are
    first averaged over devices (the global update), then dead codes move to encoder outputs
    drawn with `rng` from the gathered global batch: the same on every device and for any device
    count. Padding rows (mask 0, evaluation only) are left out of the code shares.
    """
    code_usage = outputs.stats["code_usage"]
    if mask is None:
      usage = collectives.mean(jnp.mean(code_usage, axis=0))
    else:
      count = collectives.mean(jnp.sum(mask))
      usage = collectives.mean(jnp.tensordot(mask, code_usage, axes=1)) / count
    metrics = {"perplexity": perplexity(usage), "codes_used_share": jnp.mean(usage > 0)}
    if self.dead_code_restart and self.is_mutable_collection(EMA_COLLECTION):
      candidates = self._unflatten(collectives.gather(lax.stop_gradient(outputs.stats["z_e"])))
      sizes, sums, restarted = restart_dead_codes(
        collectives.mean(self.cluster_size.value),
        collectives.mean(self.embed_sum.value),
        candidates.reshape(-1, self.code_dim),
        rng,
        self.dead_code_threshold,
      )
      self.cluster_size.value, self.embed_sum.value = sizes, sums
      metrics["codes_restarted"] = restarted.astype(jnp.float32)
    return jnp.zeros((), code_usage.dtype), metrics

  def generate(
    self, rng: jax.Array, num: int, y: jnp.ndarray | None = None, temperature: float = 1.0
  ) -> jnp.ndarray:
    """Decoder outputs of `num` uniform draws, each code independent (no temperature)."""
    del y, temperature
    codes = jax.random.randint(rng, (num, self.num_latents), 0, self.num_codes)
    return self._decode_vectors(self.codebook()[codes])


def build(config: ml_collections.ConfigDict, image_shape: Sequence[int]) -> VQVAE:
  """A VQ-VAE from `config.model`: 'conv' gives a code grid, 'mlp' gives `latent_dim` codes."""
  vq = config.vqvae
  d = vq.code_dim
  out_shape = bodies.decoder_output_shape(config, image_shape)
  if config.arch == "conv":
    features = tuple(config.conv_features)
    scale = 2 ** len(features)
    kwargs = dict(features=features, kernel_size=config.conv_kernel_size)
    encoder = bodies.SpatialConvEncoder(**kwargs, out_features=d, init_scheme=config.init_scheme)
    decoder = bodies.SpatialConvDecoder(
      **kwargs, output_shape=out_shape, init_scheme=config.init_scheme
    )
    latent_shape = (image_shape[0] // scale, image_shape[1] // scale)
  else:
    hidden = tuple(config.hidden_sizes)
    encoder = bodies.MLPEncoder(hidden, config.init_scheme)
    decoder = bodies.MLPDecoder(hidden, out_shape, config.init_scheme)
    latent_shape = (config.latent_dim,)
  return VQVAE(
    encoder,
    decoder,
    latent_shape,
    num_codes=vq.num_codes,
    code_dim=d,
    commitment_cost=vq.commitment_cost,
    codebook_update=vq.codebook_update,
    ema_decay=vq.ema_decay,
    ema_epsilon=vq.ema_epsilon,
    dead_code_restart=vq.dead_code_restart,
    dead_code_threshold=vq.dead_code_threshold,
    init_scheme=config.init_scheme,
  )
