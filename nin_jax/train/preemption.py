"""Stopping on request: SIGTERM or Ctrl-C become a checkpoint and a clean exit."""

from __future__ import annotations

import os
import signal
import sys

import jax
from absl import logging
from jax.experimental import multihost_utils


class Preemption:
  """Turns SIGTERM or a Ctrl-C into a request to checkpoint and exit at the next step.

  A second Ctrl-C aborts at once, without saving.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signal = None  # The name of the signal that asked, e.g. 'SIGINT'.
    self._previous = {}

  def __enter__(self):
    if jax.process_count() > 1:
      # JAX's preemption service catches SIGTERM itself and names one step for
      # all processes to stop at; a Python handler would replace its handler,
      # and a process stopping on its own leaves the others in a collective.
      return self
    try:
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    except ValueError:  # Not the main thread (e.g. inside a test runner thread).
      self._previous = {}
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.requested and signum == signal.SIGINT:
      print('second Ctrl-C: stopping now, without saving', file=sys.stderr, flush=True)
      os._exit(130)  # At once: no checkpoint, no cleanup (the lock is seen as stale).
    if self.requested:  # A sweep passes a Ctrl-C on as SIGTERM: already stopping.
      return
    if signum == signal.SIGINT:
      print('Ctrl-C: saving a checkpoint at the next step, then stopping (Ctrl-C again to '
            'stop now, without saving)', file=sys.stderr, flush=True)
    else:
      logging.warning('%s: saving a checkpoint and stopping at the next step', name)
    self.requested, self.signal = True, name

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # All processes must agree on the step; JAX's preemption sync service does.
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested
