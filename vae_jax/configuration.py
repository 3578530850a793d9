"""Run configs: the model family's fields, validation, flattening and migration of old formats.

Validation runs before any data is loaded or anything compiled; each failure raises `ConfigError`
with one line that names the field and the fix. Family-specific fields are checked by the family
(`Model.validate`); the rest here.
"""

import json
from typing import Any

import ml_collections

from vae_jax import models
from vae_jax.data.preprocess import BINARIZE
from vae_jax.data.spec import DataSpec
from vae_jax.errors import require, require_choice, require_sizes
from vae_jax.losses import elbo, kl_schedules, likelihoods
from vae_jax.models.bodies import ACTIVATIONS, ARCHS, INITS
from vae_jax.training import optimizer, precision

# Fields that may change when a run is resumed: they change neither the model nor a number.
RESUMABLE_CHANGES = (
  "num_epochs",
  "num_train_steps",
  "log_every_steps",
  "log_grad_norm",
  "eval_every_steps",
  "checkpoint_every_steps",
  "keep_checkpoints",
  "steps_per_execution",
  "data.data_dir",
  "data.manual_dir",
  "data.eval_batch_size",
  "data.on_device",
)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fills in the chosen family's default fields (`config.model.<name>`), in place.

  A config that switched `model.name` on the command line gets the new family's defaults.

  Raises:
    ConfigError: an unknown family, or fields of a family other than the chosen one.
  """
  name = config.model.name
  models.family(name)
  others = [k for k in models.MODELS if k != name and k in config.model]
  require(
    not others,
    f"model.{others[0] if others else ''} configures another family than model.name={name!r}; "
    "start from a config of that family (see configs/).",
  )
  models.select_model(config, name)
  return config


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks field values and that batches split evenly over `num_devices`."""
  m, d, o, obj = config.model, config.data, config.optimizer, config.objective
  family = models.family(m.name)
  require_choice(config.get("dtype", "float32"), precision.DTYPES, "dtype")
  require_choice(m.init_scheme, INITS, "model.init_scheme")
  require_choice(m.arch, ARCHS, "model.arch")
  require_choice(m.likelihood, likelihoods.LIKELIHOODS, "model.likelihood")
  require_choice(m.get("activation", "relu"), ACTIVATIONS, "model.activation")
  require(m.latent_dim >= 1, f"model.latent_dim={m.latent_dim} must be >= 1.")
  for field in ("hidden_sizes", "conv_features", "dense_sizes"):
    require_sizes(m[field], f"model.{field}", allow_empty=field == "dense_sizes")
  require(m.gaussian_sigma > 0, f"model.gaussian_sigma={m.gaussian_sigma} must be > 0.")
  _validate_natural_images(config)
  _validate_objective(obj, family)
  family.validate(config)
  require_choice(d.binarize, BINARIZE, "data.binarize")
  require(d.num_eval_examples >= 1, "data.num_eval_examples must be >= 1.")
  require_choice(o.name, optimizer.OPTIMIZERS, "optimizer.name")
  require_choice(o.schedule, optimizer.SCHEDULES, "optimizer.schedule")
  require(o.learning_rate > 0, f"optimizer.learning_rate={o.learning_rate} must be > 0.")
  require(o.warmup_steps >= 0, f"optimizer.warmup_steps={o.warmup_steps} must be >= 0.")
  for field in ("b1", "b2"):
    require(0 <= o.get(field, 0.9) < 1, f"optimizer.{field}={o.get(field)} must be in [0, 1).")
  require(o.get("eps", 1e-8) > 0, f"optimizer.eps={o.get('eps')} must be > 0.")
  ema = o.get("ema_decay", 0.0)
  require(0 <= ema < 1, f"optimizer.ema_decay={ema} must be in [0, 1) (0 disables averaging).")
  if o.schedule == "staged":
    require_sizes(o.stage_epochs, "optimizer.stage_epochs")
    require(o.stage_decay > 0, f"optimizer.stage_decay={o.stage_decay} must be > 0.")
  require(
    config.num_train_steps > 0 or config.num_epochs > 0,
    "Set num_train_steps > 0 or num_epochs > 0.",
  )
  for field in ("keep_checkpoints", "log_every_steps", "steps_per_execution"):
    require(config[field] >= 1, f"{field}={config[field]} must be >= 1.")
  require(
    d.batch_size >= 1 and d.batch_size % num_devices == 0,
    f"data.batch_size={d.batch_size} must be a positive multiple of the {num_devices} devices.",
  )
  require(d.eval_batch_size >= 1, f"data.eval_batch_size={d.eval_batch_size} must be >= 1.")


def _validate_natural_images(config: ml_collections.ConfigDict) -> None:
  """The discretized likelihood, the resnet bodies and the TFDS crop/resize fields."""
  m, d = config.model, config.data
  require(
    m.get("num_mixtures", 1) >= 1, f"model.num_mixtures={m.get('num_mixtures')} must be >= 1."
  )
  require(m.get("res_blocks", 0) >= 0, f"model.res_blocks={m.get('res_blocks')} must be >= 0.")
  require(
    m.likelihood != "logistic_mixture" or d.binarize == "none",
    f"model.likelihood='logistic_mixture' is a pmf over 8-bit pixel values; use "
    f"data.binarize='none' (not {d.binarize!r}).",
  )
  for field in ("center_crop", "resize"):
    require(d.get(field, 0) >= 0, f"data.{field}={d.get(field)} must be >= 0 (0: off).")


def _validate_objective(obj: ml_collections.ConfigDict, family: type[models.Model]) -> None:
  require_choice(obj.kl_penalty, elbo.KL_PENALTIES, "objective.kl_penalty")
  require_choice(obj.estimator, elbo.ESTIMATORS, "objective.estimator")
  require(
    obj.estimator == "elbo" or not family.capabilities.batch_loss,
    f"{family.__name__} adds a batch loss to the ELBO; use objective.estimator='elbo'.",
  )
  require_choice(obj.kl_schedule, kl_schedules.KL_SCHEDULES, "objective.kl_schedule")
  require(obj.num_samples >= 1, f"objective.num_samples={obj.num_samples} must be >= 1.")
  require(
    obj.num_samples == 1 or family.capabilities.density,
    f"objective.num_samples={obj.num_samples} > 1 needs a model with log q(z|x) and log p(z).",
  )
  if obj.estimator == "iwae":
    densities = tuple(k for k, v in models.MODELS.items() if v.capabilities.density)
    require(
      family.capabilities.density,
      f"objective.estimator='iwae' needs a model with log q(z|x) and log p(z) {densities}.",
    )
    require(
      obj.kl_penalty == "beta"
      and obj.beta == 1
      and obj.kl_schedule == "constant"
      and obj.free_bits == 0,
      "objective.estimator='iwae' optimises the importance-weighted bound, which has no KL "
      "weight: keep objective.beta=1, kl_penalty='beta', kl_schedule='constant', free_bits=0.",
    )
  for field in ("beta", "free_bits", "capacity_max", "capacity_gamma", "kl_warmup_steps"):
    require(obj[field] >= 0, f"objective.{field}={obj[field]} must be >= 0.")
  require(obj.kl_cycle_steps >= 1, f"objective.kl_cycle_steps={obj.kl_cycle_steps} must be >= 1.")
  require(
    0 < obj.kl_cycle_ratio <= 1, f"objective.kl_cycle_ratio={obj.kl_cycle_ratio} must be in (0, 1]."
  )


def validate_for_data(config: ml_collections.ConfigDict, data: DataSpec, data_name: str) -> None:
  """Checks that the model fits the dataset's image shape and labels."""
  m = config.model
  if models.family(m.name).capabilities.conditional:
    require(data.num_classes > 0, f"model.name={m.name!r} needs labels; {data_name} has none.")
  exclude = tuple(config.data.get("exclude_labels", ()))
  if exclude:
    k = data.num_classes
    require(k > 0, f"data.exclude_labels needs labels; {data_name} has none.")
    require(
      all(isinstance(v, int) and 0 <= v < k for v in exclude),
      f"data.exclude_labels={exclude} must be labels in [0, {k}).",
    )
    require(len(set(exclude)) < k, "data.exclude_labels cannot remove every class.")
  if m.arch in ("conv", "resnet"):
    scale = 2 ** len(m.conv_features)
    h, w = data.image_shape[:2]
    require(
      h % scale == 0 and w % scale == 0,
      f"model.conv_features has {len(m.conv_features)} stride-2 layers, so image height and "
      f"width must be multiples of {scale}; {data_name} images are {h}x{w}.",
    )


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def flatten(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """The config as a flat {'a.b': value} dict of JSON-compatible values."""
  if isinstance(config, ml_collections.ConfigDict):
    config = json.loads(config.to_json_best_effort())
  return _flat(config)


def changed_fields(old: dict, new: dict) -> list[str]:
  """Fields of two flattened configs that differ and would change a resumed run.

  A field that `old` lacks was added to vae_jax after the run began; its default keeps the old
  behaviour, so it does not count.
  """
  return sorted(k for k in old if old[k] != new.get(k) and k not in RESUMABLE_CHANGES)


# The flat family fields of configs written before the families owned their fields (and the
# FactorVAE discriminator's optimizer fields): old name -> name in config.model.<family>, or None
# for a field that is now a fact of the dataset.
_OLD_MODEL_FIELDS = {
  "hvae": {"hvae_lower_dims": "lower_dims", "hvae_hidden": "hidden"},
  "iaf": {
    "iaf_steps": "steps",
    "iaf_hidden_sizes": "hidden_sizes",
    "iaf_context_dim": "context_dim",
  },
  "btcvae": {
    "btcvae_alpha": "alpha",
    "btcvae_beta": "beta",
    "btcvae_gamma": "gamma",
    "btcvae_estimator": "estimator",
    "btcvae_dataset_size": None,
  },
  "factorvae": {
    "factorvae_gamma": "gamma",
    "discriminator_hidden_sizes": "discriminator_hidden_sizes",
  },
  "vqvae": {
    f"vq_{k}": k
    for k in (
      "num_codes",
      "code_dim",
      "commitment_cost",
      "codebook_update",
      "ema_decay",
      "ema_epsilon",
      "dead_code_restart",
      "dead_code_threshold",
    )
  },
}
_OLD_OPTIMIZER_FIELDS = {
  f"discriminator_{k}": f"discriminator_{k}" for k in ("learning_rate", "b1", "b2")
}


def migrate(raw: dict) -> dict:
  """A config.json dict of any earlier format as today's format (a copy; unchanged if current).

  Before the families owned their fields, `config.model` was flat (`model.vq_num_codes`, ...,
  `optimizer.discriminator_learning_rate`). Those move to the chosen family's sub-config; other
  families' fields are dropped, and `btcvae_dataset_size` now comes from the dataset.
  """
  old_keys = {k for fields in _OLD_MODEL_FIELDS.values() for k in fields}
  if not old_keys & set(raw.get("model", {})):
    return raw
  out = json.loads(json.dumps(raw))
  model, opt = out["model"], out.get("optimizer", {})
  name = model["name"]
  family_fields = {}
  for old, new in _OLD_MODEL_FIELDS.get(name, {}).items():
    if new is not None and old in model:
      family_fields[new] = model[old]
  if name == "factorvae":
    family_fields |= {new: opt[old] for old, new in _OLD_OPTIMIZER_FIELDS.items() if old in opt}
  for key in old_keys:
    model.pop(key, None)
  for key in _OLD_OPTIMIZER_FIELDS:
    opt.pop(key, None)
  if family_fields:
    model[name] = family_fields
  return out
