"""Sweep definitions: lists of config overrides, their folder names, and sweep config files.

A sweep is a list of override dicts with dotted config keys, one per member, e.g.
`[{"objective.beta": 1.0, "seed": 0}, {"objective.beta": 1.0, "seed": 1}, ...]`. A sweep config file
defines `get_config(variant="")` like any config and next to it `get_sweep()`, usually built from
`product` and `zipped`:

  def get_sweep():
    return sweeps.product({"objective.beta": [1.0, 4.0]}, seed=[0, 1, 2])

Each part given to `product` or `zipped` is either a dict of axes, `{key: [values, ...]}`, or an
already built list of override dicts; keyword arguments are axes for keys without dots. Axis values
must be a list (wrap a single tuple-valued setting: `{"model.conv_features": [(8, 8)]}`).
"""

import ast
import functools
import importlib.util
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import ml_collections

from vae_jax.errors import UserError

Overrides = dict[str, Any]

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._,=+-]")
_MAX_NAME_BYTES = 255


class SweepError(UserError, ValueError):
  """A sweep definition or sweep config file cannot be used; the message says why."""


def _axis(key: str, values: Any) -> list[Overrides]:
  if not isinstance(key, str) or not key:
    raise SweepError(f"Sweep keys must be non-empty strings, got {key!r}.")
  if isinstance(values, str) or not isinstance(values, Sequence):
    raise SweepError(f"Values of {key!r} must be a list, got {values!r}.")
  if not values:
    raise SweepError(f"Axis {key!r} has no values.")
  return [{key: v} for v in values]


def _factors(parts: tuple[Any, ...], axes: dict[str, Any]) -> list[list[Overrides]]:
  """One list of override dicts per axis (dict parts and keywords) or per list part."""
  factors = []
  for part in (*parts, axes):
    if isinstance(part, Mapping):
      factors += [_axis(k, v) for k, v in part.items()]
    elif isinstance(part, Sequence) and not isinstance(part, str):
      factors.append(validate_members(part))
    else:
      raise SweepError(f"Expected a dict of axes or a list of override dicts, got {part!r}.")
  return factors


def _merge(dicts: Sequence[Overrides]) -> Overrides:
  merged: Overrides = {}
  for d in dicts:
    for k, v in d.items():
      if k in merged:
        raise SweepError(f"Key {k!r} is set by two parts of the sweep.")
      merged[k] = v
  return merged


def product(
  *parts: Mapping[str, Sequence] | Sequence[Overrides], **axes: Sequence
) -> list[Overrides]:
  """Every combination of the axes and lists; the first one varies slowest.

  Args:
    *parts: dicts of axes `{key: [values]}` and lists of override dicts.
    **axes: more axes, for keys without dots (`seed=[0, 1, 2]`).

  Returns:
    One override dict per combination, keys in the order they were given.

  Raises:
    SweepError: an axis is not a non-empty list, or two parts set the same key.
  """
  return [_merge(combo) for combo in itertools.product(*_factors(parts, axes))]


def zipped(
  *parts: Mapping[str, Sequence] | Sequence[Overrides], **axes: Sequence
) -> list[Overrides]:
  """The axes and lists taken element-wise, like `zip`; all must have the same length.

  `zipped({"objective.beta": [1, 4], "optimizer.learning_rate": [1e-3, 5e-4]})` is two members.

  Args:
    *parts: dicts of axes `{key: [values]}` and lists of override dicts.
    **axes: more axes, for keys without dots.

  Returns:
    One override dict per position.

  Raises:
    SweepError: lengths differ, nothing is given, or two parts set the same key.
  """
  factors = _factors(parts, axes)
  if not factors:
    raise SweepError("zipped() needs at least one axis or list.")
  lengths = sorted({len(f) for f in factors})
  if len(lengths) > 1:
    raise SweepError(f"zipped() parts have different lengths {lengths}.")
  return [_merge(combo) for combo in zip(*factors, strict=True)]


def validate_members(members: Any) -> list[Overrides]:
  """Checks that `members` is a list of override dicts with string keys; returns copies."""
  if isinstance(members, Mapping | str) or not isinstance(members, Sequence):
    raise SweepError(f"A sweep must be a list of override dicts, got {type(members).__name__}.")
  out = []
  for m in members:
    if not isinstance(m, Mapping) or not all(isinstance(k, str) and k for k in m):
      raise SweepError(f"Sweep members must be dicts with dotted string keys, got {m!r}.")
    out.append(dict(m))
  return out


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text
  if isinstance(value, list | tuple):
    return "-".join(_format_value(v) for v in value)
  return str(value)


def member_name(overrides: Overrides, short_names: Mapping[str, str] | None = None) -> str:
  """A file-name-safe folder name for a member, e.g. `beta=4,seed=1`.

  Args:
    overrides: the member's overrides; their order is the order of the name's parts.
    short_names: names for keys; default the last component of the dotted key.

  Returns:
    `short=value` parts joined by commas (`base` for no overrides); characters other than
    letters, digits and `._,=+-` become `_`.

  Raises:
    SweepError: the name would be longer than a file name may be.
  """
  short_names = short_names or {}
  parts = [
    f"{short_names.get(k, k.rsplit('.', 1)[-1])}={_format_value(v)}" for k, v in overrides.items()
  ]
  name = _UNSAFE_CHARS.sub("_", ",".join(parts)) or "base"
  if name.startswith((".", "-")):
    name = "_" + name
  if len(name.encode()) > _MAX_NAME_BYTES:
    raise SweepError(f"Member name {name[:60]}... is too long for a folder name.")
  return name


def member_names(
  members: Sequence[Overrides], short_names: Mapping[str, str] | None = None
) -> list[str]:
  """`member_name` of every member, checked to be distinct."""
  names = [member_name(m, short_names) for m in members]
  seen: dict[str, Overrides] = {}
  for name, m in zip(names, members, strict=True):
    if name in seen:
      raise SweepError(
        f"Members {seen[name]} and {m} would share the folder {name!r}; a sweep must not repeat "
        "a member, and keys that share a last component need distinct values."
      )
    seen[name] = m
  return names


def split_config_path(config_path: str) -> tuple[str, str]:
  """`'configs/x.py:quick'` -> `('configs/x.py', 'quick')`; no variant gives `''`."""
  path, _, variant = config_path.partition(":")
  return path, variant


@functools.cache
def _import_config(path: str) -> ModuleType:
  if not os.path.isfile(path):
    raise SweepError(f"Config file {path} not found.")
  module_name = "vae_jax_sweep_config_" + re.sub(r"\W", "_", os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    raise SweepError(f"Cannot import {path}: {type(e).__name__}: {e}") from e
  return module


def load_sweep(config_path: str) -> tuple[str, list[Overrides]]:
  """Imports a sweep config file and returns its members.

  Args:
    config_path: `path/to/config.py` or `path/to/config.py:variant`; the file defines
      `get_config()` and `get_sweep()`.

  Returns:
    `config_path` (with its variant, as given) and the list of member overrides.

  Raises:
    SweepError: the file is missing, has no `get_sweep()`, or returns no valid members.
  """
  path, _ = split_config_path(config_path)
  module = _import_config(path)
  get_sweep = getattr(module, "get_sweep", None)
  if not callable(get_sweep):
    raise SweepError(
      f"{path} defines no get_sweep(); a sweep config needs get_sweep() next to get_config()."
    )
  members = validate_members(get_sweep())
  if not members:
    raise SweepError(f"{path}: get_sweep() returned no members.")
  return config_path, members


def _exists(config: ml_collections.ConfigDict, key: str) -> bool:
  node: Any = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def load_config(config_path: str, overrides: Overrides) -> ml_collections.ConfigDict:
  """The config of `config_path` (`get_config(variant)`) with `overrides` applied, locked.

  Raises:
    SweepError: the file or variant cannot be loaded, or an override names an unknown key or has
      a value of the wrong type.
  """
  path, variant = split_config_path(config_path)
  module = _import_config(path)
  try:
    config = module.get_config(variant) if variant else module.get_config()
  except (AttributeError, TypeError, ValueError) as e:
    raise SweepError(f"{config_path}: get_config failed ({e}).") from e
  config.lock()
  for key, value in overrides.items():
    if not _exists(config, key):
      raise SweepError(f"{config_path} has no config key {key!r}.")
    try:
      config.update_from_flattened_dict({key: value})
    except (TypeError, ValueError) as e:
      raise SweepError(f"Cannot set {key}={value!r}: {e}") from e
  return config


def parse_override(text: str) -> tuple[str, Any]:
  """`'a.b=value'` -> `('a.b', value)`, the value read as a Python literal or else a string."""
  key, sep, raw = text.partition("=")
  if not sep or not key.strip():
    raise SweepError(f"Override {text!r} is not of the form key=value.")
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  return key.strip(), value


def cli_value(value: Any) -> str:
  """A value as `--config.key=...` expects it: strings as they are, everything else as repr."""
  return value if isinstance(value, str) else repr(value)
