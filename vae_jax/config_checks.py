"""Config validation that runs before any data loading or compilation.

Each failure raises `ConfigError` with one line that names the field and the fix.
"""

import ml_collections

from vae_jax import kl_schedules, objectives, optim, total_correlation
from vae_jax.data.preprocess import BINARIZE
from vae_jax.models import ARCHS, CONDITIONAL_MODELS, IMPORTANCE_WEIGHTED_MODELS, MODELS
from vae_jax.models.bodies import INITS
from vae_jax.models.vqvae import CODEBOOK_UPDATES


class ConfigError(ValueError):
  """The config is invalid; the message names the field."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _choice(value, choices, field: str) -> None:
  _require(value in choices, f"{field}={value!r} is not one of {tuple(choices)}.")


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks field values and that batches split evenly over `num_devices`."""
  m, d, o, obj = config.model, config.data, config.optimizer, config.objective
  _choice(m.name, MODELS, "model.name")
  _choice(m.init_scheme, INITS, "model.init_scheme")
  _choice(obj.kl_penalty, objectives.KL_PENALTIES, "objective.kl_penalty")
  _choice(obj.estimator, objectives.ESTIMATORS, "objective.estimator")
  _require(obj.num_samples >= 1, f"objective.num_samples={obj.num_samples} must be >= 1.")
  if obj.estimator == "iwae":
    _require(
      m.name in IMPORTANCE_WEIGHTED_MODELS,
      f"objective.estimator='iwae' needs a model with log q(z|x) and log p(z) "
      f"{IMPORTANCE_WEIGHTED_MODELS}; model.name={m.name!r}.",
    )
    _require(
      obj.kl_penalty == "beta"
      and obj.beta == 1
      and obj.kl_schedule == "constant"
      and obj.free_bits == 0,
      "objective.estimator='iwae' optimises the importance-weighted bound, which has no KL "
      "weight: keep objective.beta=1, kl_penalty='beta', kl_schedule='constant', free_bits=0.",
    )
  _choice(obj.kl_schedule, kl_schedules.KL_SCHEDULES, "objective.kl_schedule")
  _choice(m.arch, ARCHS, "model.arch")
  _choice(m.likelihood, objectives.LIKELIHOODS, "model.likelihood")
  _choice(d.binarize, BINARIZE, "data.binarize")
  _choice(o.name, optim.OPTIMIZERS, "optimizer.name")
  _choice(o.schedule, optim.SCHEDULES, "optimizer.schedule")
  _require(m.latent_dim >= 1, f"model.latent_dim={m.latent_dim} must be >= 1.")
  if m.name == "hvae":
    _require(
      len(m.hvae_lower_dims) >= 1 and all(d >= 1 for d in m.hvae_lower_dims),
      f"model.hvae_lower_dims={tuple(m.hvae_lower_dims)} must name >= 1 layer sizes, each >= 1.",
    )
    _require(m.hvae_hidden >= 1, f"model.hvae_hidden={m.hvae_hidden} must be >= 1.")
  if m.name == "iaf":
    _require(m.iaf_steps >= 1, f"model.iaf_steps={m.iaf_steps} must be >= 1.")
    _require(
      len(m.iaf_hidden_sizes) >= 1 and all(h >= 1 for h in m.iaf_hidden_sizes),
      f"model.iaf_hidden_sizes={tuple(m.iaf_hidden_sizes)} must name >= 1 sizes, each >= 1.",
    )
    _require(m.iaf_context_dim >= 0, f"model.iaf_context_dim={m.iaf_context_dim} must be >= 0.")
  _check_batch_loss_models(config)
  if m.name == "vqvae":
    _validate_vq(m)
  for field in ("beta", "free_bits", "capacity_max", "capacity_gamma", "kl_warmup_steps"):
    _require(obj[field] >= 0, f"objective.{field}={obj[field]} must be >= 0.")
  _require(obj.kl_cycle_steps >= 1, f"objective.kl_cycle_steps={obj.kl_cycle_steps} must be >= 1.")
  _require(
    0 < obj.kl_cycle_ratio <= 1, f"objective.kl_cycle_ratio={obj.kl_cycle_ratio} must be in (0, 1]."
  )
  _require(d.num_eval_examples >= 1, "data.num_eval_examples must be >= 1.")
  _require(m.gaussian_sigma > 0, f"model.gaussian_sigma={m.gaussian_sigma} must be > 0.")
  _require(o.learning_rate > 0, f"optimizer.learning_rate={o.learning_rate} must be > 0.")
  _require(o.warmup_steps >= 0, f"optimizer.warmup_steps={o.warmup_steps} must be >= 0.")
  _require(
    config.num_train_steps > 0 or config.num_epochs > 0,
    "Set num_train_steps > 0 or num_epochs > 0.",
  )
  _require(config.keep_checkpoints >= 1, "keep_checkpoints must be >= 1.")
  _require(config.log_every_steps >= 1, "log_every_steps must be >= 1.")
  _require(config.steps_per_execution >= 1, "steps_per_execution must be >= 1.")
  for field in ("batch_size", "eval_batch_size"):
    size = d[field]
    _require(
      size >= 1 and size % num_devices == 0,
      f"data.{field}={size} must be a positive multiple of the {num_devices} devices.",
    )


def _check_batch_loss_models(config: ml_collections.ConfigDict) -> None:
  """beta-TCVAE and FactorVAE fields, and the discriminator optimizer only where there is one."""
  m, o = config.model, config.optimizer
  if m.name in ("btcvae", "factorvae"):
    _require(
      config.objective.estimator == "elbo",
      f"model.name={m.name!r} adds a batch loss to the ELBO; use objective.estimator='elbo'.",
    )
  if m.name == "btcvae":
    _choice(m.btcvae_estimator, total_correlation.ESTIMATORS, "model.btcvae_estimator")
    for field in ("btcvae_alpha", "btcvae_beta", "btcvae_gamma"):
      _require(m[field] >= 0, f"model.{field}={m[field]} must be >= 0.")
    _require(
      m.btcvae_dataset_size >= 1,
      f"model.btcvae_dataset_size={m.btcvae_dataset_size} must be the number of training examples.",
    )
    _require(
      m.btcvae_estimator != "mss" or config.data.batch_size >= 2,
      "model.btcvae_estimator='mss' needs data.batch_size >= 2.",
    )
  if m.name == "factorvae":
    _require(m.factorvae_gamma >= 0, f"model.factorvae_gamma={m.factorvae_gamma} must be >= 0.")
    _require(
      all(h >= 1 for h in m.discriminator_hidden_sizes),
      f"model.discriminator_hidden_sizes={tuple(m.discriminator_hidden_sizes)} must all be >= 1.",
    )
    _require(
      o.discriminator_learning_rate > 0,
      "model.name='factorvae' trains its discriminator with its own Adam: set "
      "optimizer.discriminator_learning_rate > 0 (Kim & Mnih 2018: 1e-4).",
    )
  else:
    _require(
      o.discriminator_learning_rate == 0,
      f"optimizer.discriminator_learning_rate is for model.name='factorvae'; {m.name!r} has no "
      "discriminator: set it to 0.",
    )


def _validate_vq(m: ml_collections.ConfigDict) -> None:
  for field in ("vq_num_codes", "vq_code_dim"):
    _require(m[field] >= 1, f"model.{field}={m[field]} must be >= 1.")
  _choice(m.vq_codebook_update, CODEBOOK_UPDATES, "model.vq_codebook_update")
  _require(
    m.vq_commitment_cost >= 0, f"model.vq_commitment_cost={m.vq_commitment_cost} must be >= 0."
  )
  _require(0 <= m.vq_ema_decay < 1, f"model.vq_ema_decay={m.vq_ema_decay} must be in [0, 1).")
  _require(m.vq_ema_epsilon > 0, f"model.vq_ema_epsilon={m.vq_ema_epsilon} must be > 0.")
  _require(
    m.vq_dead_code_threshold >= 0,
    f"model.vq_dead_code_threshold={m.vq_dead_code_threshold} must be >= 0.",
  )
  _require(
    not m.vq_dead_code_restart or m.vq_codebook_update == "ema",
    "model.vq_dead_code_restart needs model.vq_codebook_update='ema' (restarts use EMA usage).",
  )


def validate_for_data(
  config: ml_collections.ConfigDict, image_shape: tuple, num_classes: int
) -> None:
  """Checks that the model fits the dataset's image shape and labels."""
  m = config.model
  if m.name in CONDITIONAL_MODELS:
    _require(num_classes > 0, f"model.name={m.name!r} needs labels; {config.data.name} has none.")
  exclude = tuple(config.data.get("exclude_labels", ()))
  if exclude:
    _require(num_classes > 0, f"data.exclude_labels needs labels; {config.data.name} has none.")
    _require(
      all(isinstance(v, int) and 0 <= v < num_classes for v in exclude),
      f"data.exclude_labels={exclude} must be labels in [0, {num_classes}).",
    )
    _require(len(set(exclude)) < num_classes, "data.exclude_labels cannot remove every class.")
  if m.arch == "conv":
    scale = 2 ** len(m.conv_features)
    h, w = image_shape[:2]
    _require(
      h % scale == 0 and w % scale == 0,
      f"model.conv_features has {len(m.conv_features)} stride-2 layers, so image height and "
      f"width must be multiples of {scale}; {config.data.name} images are {h}x{w}.",
    )
