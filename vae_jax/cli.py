"""What every command line shares: a quiet start, flag parsing, and one `error:` line per failure.

`run(main)` is `absl.app.run` with a flag parser that turns bad flags (unknown config keys, values
of the wrong type, missing or broken config files) into one line, and with `main` guarded so that
every `errors.UserError` ends the process with one `error: <message>` line and exit status 1.
Before `main` runs, the process joins JAX's distributed runtime when it is one of several
(`distributed.join`).
"""

import ast
import logging as pylogging
import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

from vae_jax import distributed
from vae_jax.errors import UserError, WriteError


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow with file descriptor 2 muted.

  TF (2.21) prints C++ INFO lines at import (the oneDNN notice, CPU features) through absl's C++
  logging, before TF_CPP_MIN_LOG_LEVEL applies. TF only reads data here, so a command's first
  line should be its own. Python errors raised by the import still reach stderr.
  """
  if "tensorflow" in sys.modules:
    return
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow  # noqa: F401
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


_import_tensorflow_quietly()

# INFO lines of libraries that say nothing a user acts on: Orbax's several lines per save, and
# JAX's probe for a TPU on machines without one.
_QUIET = ("/orbax/", "xla_bridge.py")


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter from Orbax and JAX's backend probe; warnings and errors pass."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or not any(q in record.pathname for q in _QUIET)


def quiet_libraries() -> None:
  """Installs the filter on absl's handler (before JAX starts its backends)."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


def hide_gpus_from_tensorflow() -> None:
  """TF only reads data here; keep it off the accelerators JAX uses."""
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")


def fail(message: str) -> None:
  """Ends the process with one `error: <message>` line on stderr and exit status 1."""
  sys.exit(f"error: {message}")


def _first_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  return text.splitlines()[0]


_RUN_OVERRIDES: dict = {}


def run_overrides() -> dict:
  """`--config.<key>=<value>` flags of a command without a config file (evaluate, tools).

  They change the reopened run's config; `runs.open_run` allows only fields that do not change
  the model (where the data is, evaluation batch sizes).
  """
  return dict(_RUN_OVERRIDES)


def _split_run_overrides(argv: list[str]) -> list[str]:
  rest = []
  for arg in argv:
    key, sep, value = arg[len("--config.") :].partition("=")
    if arg.startswith("--config.") and sep:
      try:
        _RUN_OVERRIDES[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        _RUN_OVERRIDES[key] = value
    else:
      rest.append(arg)
  return rest


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every parse failure as one `error:` line (exit status 2)."""
  try:
    if "config" not in flags.FLAGS:
      argv = _split_run_overrides(argv)
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      flags.FLAGS.config.keys()  # A config file that failed to load raises only when read.
    return rest
  except Exception as e:  # noqa: BLE001 - config files can raise anything; each becomes one line.
    print(f"error: {describe_flag_error(argv, e)}", file=sys.stderr)
  sys.exit(2)


def _config_file(argv: list[str]) -> str | None:
  """The config file flag's value; absl keeps the last of repeated flags."""
  given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  return given[-1] if given else None


def describe_flag_error(argv: list[str], e: BaseException) -> str:
  """A one-line account, naming the flag or file and the fix, of a failure to parse `argv`."""
  text = str(e).strip().strip("'\"")
  path = _config_file(argv)
  if isinstance(e, AttributeError | KeyError):
    name = text.strip("'\"")
    flag = next((a.split("=")[0] for a in argv if a.startswith("--config.") and name in a), None)
    return (
      f"{flag or name} names no field of the config ({name!r} is unknown); check the spelling "
      "against the config file (configs/default.py lists every field)."
    )
  if isinstance(e, flags.Error):
    if "Error whilst parsing config file" in text:
      cause = [line for line in text.splitlines() if line.strip()][-1]
      return f"config file {path} failed: {cause}"
    return f"{_first_line(e)} (see --help)"
  if isinstance(e, FileNotFoundError) or "No such file or directory" in text:
    return f"config file {path} not found; give the path of a config file (see configs/)."
  if isinstance(e, ImportError):
    return (
      f"config file {path} cannot be imported ({_first_line(e)}); run from the repository root, "
      "where configs/ is a package."
    )
  return f"config file {path} cannot be loaded: {type(e).__name__}: {_first_line(e)}"


def guarded(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """`main` with `UserError`s turned into one `error:` line."""

  def wrapped(argv: list[str]) -> None:
    quiet_libraries()
    try:
      distributed.join_from_flags()
      main(argv)
    except WriteError as e:
      # Orbax and asyncio leave work behind that fails noisily while the interpreter shuts down
      # after a write failure; nothing more can be written anyway.
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(1)
    except UserError as e:
      fail(str(e))

  return wrapped


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` with one-line flag and user errors."""
  app.run(guarded(main), flags_parser=parse_flags)
