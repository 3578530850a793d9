"""Stopping a run on a signal without losing it: finish the dispatch, save, say how to continue.

`StopSignals` turns the first SIGTERM (what `kill`, a scheduler's time limit or a preemptible VM
sends), SIGINT (Ctrl-C) or pre-timeout signal (Slurm's `--signal=USR1@120`) into a request that
the training loop honours between dispatches: it saves a checkpoint at that step and raises
`Stopped`. The same command then resumes, and because every batch and key is a function of the
step, the final parameters equal those of a run that was never stopped. A second signal ends the
process at once.
"""

import os
import signal
import sys
import threading

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class Stopped(Exception):  # noqa: N818 - not an error: the run stopped as asked.
  """Training stopped on a signal after saving a checkpoint.

  Attributes:
    signum: the signal.
    step: the step the checkpoint holds.
    where: the checkpoint directory.
  """

  def __init__(self, signum: int, step: int, where: str):
    self.signum, self.step, self.where = signum, step, where
    name = signal.Signals(signum).name
    super().__init__(
      f"stopped by {name} at step {step}; the checkpoint is in {where}/{step}. Run the same "
      "command to continue from there."
    )


def parse_signals(names: str | tuple[str, ...]) -> tuple[int, ...]:
  """'TERM,INT,USR1' (or names with the SIG prefix) -> signal numbers.

  Raises:
    ValueError: an unknown signal name.
  """
  if isinstance(names, str):
    names = tuple(n for n in names.split(",") if n.strip())
  out = []
  for name in names:
    name = name.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if not hasattr(signal, name):
      raise ValueError(f"Unknown signal {name!r}; use names like TERM, INT, USR1.")
    out.append(int(getattr(signal, name)))
  return tuple(out)


class StopSignals:
  """While active, the first of `signals` requests a stop; a second one exits at once.

  Only the main thread can install signal handlers; elsewhere (e.g. a test calling the trainer
  from a worker thread) this does nothing and `requested` stays None.
  """

  def __init__(self, signals: tuple[int, ...] = ()):
    self.signals = signals or parse_signals(DEFAULT_SIGNALS)
    self.requested: int | None = None
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.requested is not None:
      print(f"Second {signal.Signals(signum).name}: exiting now.", file=sys.stderr, flush=True)
      os._exit(128 + signum)
    self.requested = signum
    print(
      f"Received {signal.Signals(signum).name}: saving a checkpoint after the current dispatch "
      "(send it again to exit at once).",
      file=sys.stderr,
      flush=True,
    )

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for signum in self.signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
