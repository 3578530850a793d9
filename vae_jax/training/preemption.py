"""Stopping a run on a signal without losing it: finish the dispatch, save, say how to continue.

`StopSignals` turns the first SIGTERM (what `kill`, a scheduler's time limit or a preemptible VM
sends), SIGINT (Ctrl-C) or pre-timeout signal (Slurm's `--signal=USR1@120`) into a request that
the training loop honours between dispatches: it saves a checkpoint at that step and raises
`Stopped`. The same command then resumes, and because every batch and key is a function of the
step, the final parameters equal those of a run that was never stopped. A second signal ends the
process at once.

In a multi-process run the signal may reach one process only (a preempted host, or Slurm's signal
to one task). The processes compare their requests at agreed steps (`agreed`), so all of them stop
at the same step and save one checkpoint together.
"""

import os
import signal
import sys
import threading

import jax
import numpy as np

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

  def agreed(self, sync_point: bool) -> int | None:
    """The signal every process stops on now, or None to go on.

    One process stops as soon as it has a request. Several exchange their requests at sync
    points only (steps every process reaches in the same order), so that they agree on the step;
    the exchange is one small all-gather.

    Args:
      sync_point: whether the loop is at a step where the processes compare requests.
    """
    if jax.process_count() == 1:
      return self.requested
    if not sync_point:
      return None
    from jax.experimental import multihost_utils

    requests = np.asarray(multihost_utils.process_allgather(np.int32(self.requested or 0)))
    stopping = requests[requests > 0]
    return int(stopping[0]) if stopping.size else None

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for signum in self.signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
