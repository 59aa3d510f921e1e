"""Orbax checkpoints of the train state: save every N steps, resume by itself.

A run's workdir holds `checkpoints/<step>/`. Starting a run in a workdir that
has checkpoints restores the newest one that reads back; a damaged one is
moved aside to `<step>.corrupt-<n>` (kept for inspection, never deleted) and
the next older one is tried. Every process calls save/restore: Orbax writes
each array's shards from the processes that hold them.
"""

from __future__ import annotations


import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from nin_jax import storage


class CheckpointError(RuntimeError):
  """No checkpoint in the workdir could be restored."""


class _CheckpointManager(ocp.CheckpointManager):
  """Orbax's manager, minus its questions to JAX's preemption service.

  Orbax asks `reached_preemption_sync_point(step)` whenever it saves, and
  again from its finalize thread with the (older) step being finalized. The
  service keeps only the last step it was told, and the processes agree on
  a stop step from those: a stale step could make one process pick a step the
  other had already passed, and the pair would hang. `train.Preemption` is
  the only caller, once per step, from the train loop.
  """

  def reached_preemption(self, step: int) -> bool:
    return False


class Checkpointer:
  """Saves and restores one pytree (the train state) under workdir/checkpoints."""

  def __init__(self, workdir, *, keep: int = 3):
    self.directory = storage.workdir_path(workdir) / 'checkpoints'
    self._keep = keep
    if storage.is_dangling_link(self.directory):
      raise CheckpointError(f'{self.directory} links to {os.readlink(self.directory)},'
                            ' which does not exist (storage not mounted?)')
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f'{self.directory} is a file, not a checkpoint directory;'
                            ' move it away or use another --workdir')
    try:
      self._manager = self._open()
    except OSError as e:  # Unreadable or unwritable: a user error, not a crash.
      raise CheckpointError(
          f'cannot use checkpoint directory {self.directory}: {e}') from None

  def _open(self) -> ocp.CheckpointManager:
    self._remove_unfinished_saves()
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True)
    return _CheckpointManager(self.directory, options=options)

  def _remove_unfinished_saves(self) -> None:
    """Deletes the `<step>.orbax-checkpoint-tmp*` dirs of saves cut short by a crash.

    Orbax never restores them. Its own cleanup (cleanup_tmp_directories) runs
    in a background thread that is still listing this directory while
    training starts; doing it here, before any save, leaves nothing racing.
    Only process 0 deletes; no process can save before every process is here.
    """
    if jax.process_index() != 0 or not self.directory.is_dir():
      return
    for path in self.directory.iterdir():
      if '.orbax-checkpoint-tmp' in path.name:
        path.rmtree()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts an asynchronous save of `state` at `step` (no-op if already saved)."""
    if step in self._manager.all_steps():
      return False
    # The fingerprint lets restore notice data that reads back but is wrong
    # (tensorstore keeps no checksums: a flipped byte loads silently).
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=force,
                              custom_metadata={'fingerprint': fingerprint(state)})

  def wait(self) -> None:
    """Blocks until every save started so far is on disk."""
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state):
    """Restores the newest readable checkpoint, or returns None if there is none.

    Args:
      abstract_state: a pytree of jax.ShapeDtypeStruct with shardings, the
        structure to restore into.
    Raises:
      CheckpointError: checkpoints exist but none of them can be read.
    """
    tried = []
    while (step := self._manager.latest_step()) is not None:
      try:
        state = self._manager.restore(
            step, args=ocp.args.StandardRestore(abstract_state))
        expected = (self._manager.metadata(step).custom_metadata or {}).get('fingerprint')
        if expected is not None and expected != fingerprint(state):
          raise CheckpointError('its arrays differ from what was saved (fingerprint mismatch)')
        logging.info('restored checkpoint at step %d from %s', step, self.directory)
        return state
      except Exception as e:  # Orbax raises many types for damaged files.
        tried.append(step)
        logging.warning('checkpoint at step %d cannot be read (%s: %s); '
                        'moving it aside and trying an older one',
                        step, type(e).__name__, str(e).splitlines()[0][:200])
        self._set_aside(step)
    if tried:
      raise CheckpointError(
          f'no readable checkpoint in {self.directory}: steps {tried} are '
          'damaged (moved aside as *.corrupt-*). Delete them, or start a fresh '
          'workdir, to train from scratch.')
    return None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      src = self.directory / str(step)
      n = 0
      while (dst := self.directory / f'{step}.corrupt-{n}').exists():
        n += 1
      src.rename(dst)  # On a bucket: a copy of every object, then a delete.
    _sync(f'set_aside_{step}')
    self._manager.close()
    self._manager = self._open()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def load_for_inspection(workdir, step: int | None = None):
  """A saved train state as a pytree of host-local arrays, whatever devices saved it.

  For analysis (plots, comparisons), not for resuming: everything lands on
  this process's first device.
  """
  directory = storage.workdir_path(workdir) / 'checkpoints'
  if step is None:
    steps = [int(d.name) for d in directory.iterdir() if d.name.isdigit()
             ] if directory.is_dir() else []
    if not steps:
      raise CheckpointError(f'no checkpoint in {directory}')
    step = max(steps)
  path = directory / str(step) / 'default'
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, target)


def fingerprint(state) -> list[int]:
  """Per-array wrapping sum of the raw bits (uint32): equal iff, almost surely, same data."""
  return [int(x) for x in jax.device_get(_fingerprint(state))]


@jax.jit
def _fingerprint(state):
  def bits(x):
    if x.dtype == jnp.bool_:
      x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16}.get(x.dtype.itemsize, jnp.uint32)
    return jnp.sum(jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32),
                   dtype=jnp.uint32)
  return [bits(x) for x in jax.tree.leaves(state)]


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
