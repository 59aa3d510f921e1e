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
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """No checkpoint in the workdir could be restored."""


class Checkpointer:
  """Saves and restores one pytree (the train state) under workdir/checkpoints."""

  def __init__(self, workdir: str, *, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._keep = keep
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True)
    return ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts an asynchronous save of `state` at `step` (no-op if already saved)."""
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

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
      src = os.path.join(self.directory, str(step))
      n = 0
      while os.path.exists(dst := f'{src}.corrupt-{n}'):
        n += 1
      os.rename(src, dst)
    _sync(f'set_aside_{step}')
    self._manager.close()
    self._manager = self._open()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def load_for_inspection(workdir: str, step: int | None = None):
  """A saved train state as a pytree of host-local arrays, whatever devices saved it.

  For analysis (plots, comparisons), not for resuming: everything lands on
  this process's first device.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if step is None:
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    if not steps:
      raise CheckpointError(f'no checkpoint in {directory}')
    step = max(steps)
  path = os.path.join(directory, str(step), 'default')
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, target)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
