"""The errors a user can fix: each command line prints one `error: <message>` line for them.

Every class derives from `UserError`, so a command catches one type. Messages name the field, file
or flag and say what to do.
"""

import contextlib
import errno


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


class WorkdirError(UserError, OSError):
  """The workdir cannot be used (a file, not writable, read-only); the message says which."""


class WriteError(UserError, OSError):
  """A file could not be written (no space left, I/O error); the message says what is intact."""


# Failures of the file system, as their OS error text (libraries such as TensorFlow and
# TensorStore report them in messages rather than as OSError).
_WRITE_FAILURES = {
  errno.ENOSPC: "No space left on device",
  errno.EDQUOT: "Disk quota exceeded",
  errno.EIO: "Input/output error",
  errno.EROFS: "Read-only file system",
  errno.EACCES: "Permission denied",
  errno.EPERM: "Operation not permitted",
}


def write_failure(e: BaseException) -> str | None:
  """The reason a write failed, when `e` is a file-system failure (else None)."""
  if isinstance(e, OSError) and e.errno in _WRITE_FAILURES:
    return _WRITE_FAILURES[e.errno]
  text = str(e)
  return next((reason for reason in _WRITE_FAILURES.values() if reason in text), None)


@contextlib.contextmanager
def writing(what: str, intact: str = ""):
  """Turns a file-system failure inside the block into one `WriteError` naming `what`.

  Args:
    what: what was being written (e.g. "results.json in runs/x").
    intact: what the user can rely on after the failure, appended to the message.
  """
  try:
    yield
  except UserError:
    raise
  except Exception as e:
    reason = write_failure(e)
    if reason is None:
      raise
    raise WriteError(f"could not write {what}: {reason}." + (f" {intact}" if intact else "")) from e


def require(ok: bool, message: str) -> None:
  """Raises `ConfigError(message)` unless `ok`."""
  if not ok:
    raise ConfigError(message)


def require_sizes(value, field: str, allow_empty: bool = False) -> None:
  """Raises `ConfigError` unless `value` is a tuple of whole numbers >= 1 (layer sizes)."""
  values = tuple(value) if isinstance(value, tuple | list) else (value,)
  whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
  require(
    whole and all(v >= 1 for v in values) and (allow_empty or values),
    f"{field}={value!r} must be a tuple of whole numbers >= 1, e.g. (256, 128).",
  )


def require_choice(value, choices, field: str) -> None:
  """Raises `ConfigError` unless `value` is one of `choices`; the message names `field`."""
  require(value in choices, f"{field}={value!r} is not one of {tuple(choices)}.")
