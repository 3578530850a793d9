"""The errors a user can fix: each command line prints one `error: <message>` line for them.

Every class derives from `UserError`, so a command catches one type. Messages name the field, file
or flag and say what to do.
"""


class UserError(Exception):
  """A problem with what the user asked for or gave; the message is the whole report."""


class ConfigError(UserError, ValueError):
  """The config is invalid; the message names the field."""


class DataError(UserError, RuntimeError):
  """Data are missing or unusable; the message says how to fix it."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint or a run's saved files cannot be used; the message says what to do."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


def require(ok: bool, message: str) -> None:
  """Raises `ConfigError(message)` unless `ok`."""
  if not ok:
    raise ConfigError(message)


def require_choice(value, choices, field: str) -> None:
  """Raises `ConfigError` unless `value` is one of `choices`; the message names `field`."""
  require(value in choices, f"{field}={value!r} is not one of {tuple(choices)}.")
