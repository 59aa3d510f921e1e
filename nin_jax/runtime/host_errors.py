"""One process's error stops every process of a run, with the same message.

An error that only one host sees (process 0's workdir lock or metric writer, a
file only it cannot read) would leave the other hosts waiting in their next
collective until jax's heartbeat timeout, and then say only that a peer died.
Instead the failing process posts its message in jax.distributed's key-value
store; every process watches that key in a background thread, prints the
message it finds and exits with the same status. Each then says it has seen
the message and waits (a few seconds at most) for the others to say so, so
process 0, which hosts the store, outlives the reading.

The store is reached through jax's distributed client, which jax does not
export (`jax._src.distributed.global_state.client`); where that moves, the
failing process only prints its message and exits, and the others stop at
their next collective or at the heartbeat timeout, as before.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from typing import NoReturn

import jax

MESSAGE_KEY = 'nin_jax/failure/message'
SEEN_DIR = 'nin_jax/failure/seen/'
POLL_S = 1.0      # How often each process looks for a posted message.
ACK_WAIT_S = 10.0  # How long a process waits for the others to have seen it.

_finishing = threading.Lock()
_stop_watching = threading.Event()


def _client():
  """jax's distributed runtime client, or None (not initialized, or moved)."""
  try:
    from jax._src import distributed
    return distributed.global_state.client
  except (ImportError, AttributeError):
    return None


def watch() -> None:
  """Starts this process's watcher (after jax.distributed.initialize)."""
  client = _client()
  if client is None:
    return
  _stop_watching.clear()
  thread = threading.Thread(target=_watch, args=(client,), name='host-errors', daemon=True)
  thread.start()

  def stop():  # Before jax's own exit handlers shut the client down.
    _stop_watching.set()
    thread.join(timeout=2 * POLL_S)
  atexit.register(stop)


def _watch(client) -> None:
  me = jax.process_index()
  while not _stop_watching.wait(POLL_S):
    try:
      posted = json.loads(client.key_value_try_get(MESSAGE_KEY))
    except Exception:  # pylint: disable=broad-except  # Not posted (NOT_FOUND), or shutting down.
      continue
    if posted['process'] != me:
      _finish(client, posted['message'], posted['code'])


def stop_everywhere(message: str, code: int) -> NoReturn:
  """This process failed: every process prints `message` and exits with `code`."""
  client = _client()
  if client is not None and jax.process_count() > 1:
    _bounded(lambda: client.key_value_set(MESSAGE_KEY, json.dumps(
        {'process': jax.process_index(), 'message': message, 'code': code})), 2.0)
  _finish(client, message, code)


def _finish(client, message: str, code: int) -> NoReturn:
  if not _finishing.acquire(blocking=False):  # Another thread of ours is finishing.
    threading.Event().wait()
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  if client is not None and jax.process_count() > 1:
    _bounded(lambda: _say_seen_and_wait(client), ACK_WAIT_S + 2)
  os._exit(code)  # Not sys.exit: the shutdown barrier would wait for dead peers.


def _say_seen_and_wait(client) -> None:
  client.key_value_set(f'{SEEN_DIR}{jax.process_index()}', '1')
  deadline = time.time() + ACK_WAIT_S
  while time.time() < deadline:
    if len(client.key_value_dir_get(SEEN_DIR)) >= jax.process_count():
      return
    time.sleep(0.2)


def _bounded(fn, timeout_s: float) -> None:
  """Runs fn in a daemon thread for at most timeout_s: a store whose host is
  gone may never answer, and a failing process must still exit."""
  def run():
    try:
      fn()
    except Exception:  # pylint: disable=broad-except  # Posted already, or the store is gone.
      pass
  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout_s)
