"""Orbax checkpoints of the train state: save every N steps, resume by itself.

A run's workdir holds `checkpoints/<step>/`. Starting a run in a workdir that
has checkpoints restores the newest one that reads back; a damaged one is
moved aside to `<step>.corrupt-<n>` (kept for inspection, never deleted) and
the next older one is tried. Every process calls save/restore: Orbax writes
each array's shards from the processes that hold them.
"""

from __future__ import annotations


import itertools
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from nin_jax.runtime import sharding
from nin_jax.runtime import storage


# How many Checkpointers this program has opened: every process opens them in
# the same order, so the n-th one's barriers get the same names everywhere.
_OPENED = itertools.count()


class CheckpointError(RuntimeError):
  """No checkpoint in the workdir could be restored."""


class CheckpointMismatch(CheckpointError):
  """A checkpoint reads back but does not fit the state this config builds."""

  def __init__(self, step: int, directory: str, differences: list[str]):
    self.step, self.directory, self.differences = step, directory, differences
    super().__init__(f'checkpoint at step {step} in {directory} does not fit this config '
                     f'({"; ".join(differences[:3])}'
                     f'{f"; {len(differences) - 3} more" if len(differences) > 3 else ""})')


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
  """Saves and restores one pytree (the train state) under workdir/checkpoints.

  `metadata` (a JSON-able dict, e.g. the run's config) is saved with every
  checkpoint and read back with `saved_metadata(step)`: a record of what made
  the checkpoint that no other file in the workdir can contradict.
  """

  def __init__(self, workdir, *, keep: int = 3, metadata: dict | None = None):
    self.directory = storage.workdir_path(workdir) / 'checkpoints'
    self._keep = keep
    self._metadata = dict(metadata or {})
    # Orbax names its barriers by step alone. Several managers saving at once
    # (a trial group's) would meet at one barrier and fail as "already
    # ongoing"; a prefix per Checkpointer keeps each manager's apart.
    self._barrier_prefix = f'checkpointer{next(_OPENED)}'
    if jax.process_count() > 1:
      _use_coordinator_barriers()
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
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self._keep, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=self._barrier_prefix))
    # Naming the item's handler up front lets `metadata(step)` read a checkpoint
    # this manager did not save; without it Orbax warns, on every resume, that
    # the item "could not be restored".
    return _CheckpointManager(self.directory, options=options,
                              item_handlers=ocp.StandardCheckpointHandler())

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
                              custom_metadata={**self._metadata,
                                               'fingerprint': fingerprint(state)})

  def saved_metadata(self, step: int) -> dict:
    """The custom metadata saved with checkpoint `step` ({} if it has none)."""
    return dict(self._manager.metadata(step).custom_metadata or {})

  def wait(self) -> None:
    """Blocks until every save started so far is on disk."""
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state):
    """Restores the newest readable checkpoint, or returns None if there is none.

    Every decision is taken by all processes together: they agree on the
    newest step, each tries to read it, and if any process could not, all of
    them set it aside and try the next older one. (A host falling back alone
    would leave its peers in other collectives: a hang.)

    Args:
      abstract_state: a pytree of jax.ShapeDtypeStruct with shardings, the
        structure to restore into.
    Raises:
      CheckpointError: checkpoints exist but none of them can be read, or the
        processes do not see the same checkpoints.
    """
    tried = []
    while (step := self._agreed_latest_step()) is not None:
      differences, error = self._classify(step, abstract_state)
      if agreed_failures(bool(differences)):  # Reads, but another shape: not damage.
        raise CheckpointMismatch(step, self.directory,
                                 differences or ['seen by another process'])
      state, error = self._read(step, abstract_state) if error is None else (None, error)
      failed = agreed_failures(error is not None)
      if not failed:
        logging.info('restored checkpoint at step %d from %s', step, self.directory)
        return state
      tried.append(step)
      cause = (f'{type(error).__name__}: {str(error).splitlines()[0][:200]}'
               if error is not None else 'read fine here')
      logging.warning('checkpoint at step %d cannot be read by process(es) %s (here: '
                      '%s); moving it aside and trying an older one', step, failed, cause)
      self._set_aside(step)
    if tried:
      raise CheckpointError(
          f'no readable checkpoint in {self.directory}: steps {tried} are '
          'damaged (moved aside as *.corrupt-*). Delete them, or start a fresh '
          'workdir, to train from scratch.')
    return None

  def _classify(self, step: int, abstract_state):
    """(differences, None), or ([], the error) if the metadata cannot be read: damage."""
    try:
      return self.differences(step, abstract_state), None
    except Exception as e:  # Metadata missing or garbled.
      return [], e

  def differences(self, step: int, abstract_state) -> list[str]:
    """How checkpoint `step`'s arrays differ from `abstract_state` ([] if they fit).

    Read from the checkpoint's metadata alone, before any array: a damaged
    checkpoint raises here only if its metadata is damaged, and one saved
    under another config shows as different paths, shapes or dtypes.
    """
    path = os.path.join(self.directory, str(step), 'default')
    reader = ocp.StandardCheckpointHandler()
    try:
      saved = _flat_arrays(reader.metadata(epath.Path(path)))
    finally:
      reader.close()
    wanted = _flat_arrays(ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True))
    differences = [f'{p}: missing in the checkpoint' for p in wanted if p not in saved]
    differences += [f'{p}: in the checkpoint only' for p in saved if p not in wanted]
    differences += [f'{p}: {saved[p]} (checkpoint) vs {wanted[p]} (now)'
                    for p in wanted if p in saved and saved[p] != wanted[p]]
    return differences

  def _read(self, step: int, abstract_state):
    """(state, None), or (None, the exception) if this process cannot read `step`."""
    try:
      state = self._reader().restore(self.directory / str(step) / 'default',
                                     args=ocp.args.StandardRestore(abstract_state))
      expected = self.saved_metadata(step).get('fingerprint')
      if expected is not None and expected != fingerprint(state):
        raise CheckpointError('its arrays differ from what was saved (fingerprint mismatch)')
      return state, None
    except Exception as e:  # Orbax raises many types for damaged files.
      return None, e

  @staticmethod
  def _reader() -> ocp.Checkpointer:
    """Reads this process's shards with no barrier: a process whose read fails
    never reaches a barrier, and its peers would wait there for ever. The
    verdict is agreed afterwards (`agreed_failures`)."""
    me = jax.process_index()
    only_me = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.StandardCheckpointHandler(multiprocessing_options=only_me),
                            multiprocessing_options=only_me)

  def _agreed_latest_step(self) -> int | None:
    """The newest step, the same on every process, or a clear error if they differ."""
    latest = self._manager.latest_step()
    seen = sharding.gather_from_processes(-1 if latest is None else latest)
    if len(set(seen)) > 1:
      raise CheckpointError(
          f'the processes of this run see different newest checkpoints in '
          f'{self.directory} (by process: {[s if s >= 0 else None for s in seen]}); '
          'every host must see the same workdir (a shared file system or bucket)')
    return latest

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      src = self.directory / str(step)
      n = 0
      while (dst := self.directory / f'{step}.corrupt-{n}').exists():
        n += 1
      src.rename(dst)  # On a bucket: a copy of every object, then a delete.
    _sync(f'{self._barrier_prefix}_set_aside_{step}')
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
  device = jax.sharding.make_single_device_sharding(jax.local_devices()[0])
  # The item's own metadata: the checkpointer's would look for the step's
  # metadata file inside the item and warn that it does not exist.
  reader = ocp.StandardCheckpointHandler()
  try:
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), reader.metadata(path))
  finally:
    reader.close()
  return checkpointer.restore(path, target)


def _flat_arrays(tree) -> dict[str, str]:
  """'a/b/c' → 'float32[3, 4]' for every array leaf of a (serialized) tree."""
  flat = ocp.tree.to_flat_dict(tree)
  return {'/'.join(map(str, p)): f'{jnp.dtype(v.dtype).name}{list(v.shape)}'
          for p, v in flat.items() if hasattr(v, 'shape') and hasattr(v, 'dtype')}


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


def agreed_failures(failed_here: bool) -> list[int]:
  """The processes that report a failure, the same list on every process.

  The decision point for anything a host sees alone (a read error, a damaged
  file): every process calls it with its own finding and takes the branch the
  returned list implies, so no host ever falls back alone.
  """
  flags = sharding.gather_from_processes(int(failed_here))
  return [p for p, flag in enumerate(flags) if flag]


def _sync(name: str) -> None:
  ocp.multihost.sync_global_processes(name)


def _use_coordinator_barriers() -> None:
  """Orbax's barriers (several per save) wait at jax.distributed's coordinator.

  By default Orbax syncs processes with `multihost_utils.sync_global_devices`:
  an all-gather on the devices, run partly from its background commit thread
  while the step loop runs its own collectives. The coordinator's barrier
  takes no device time and is safe from any thread. (An Orbax flag; a value
  given on the command line wins.)
  """
  from absl import flags
  flag = flags.FLAGS['experimental_orbax_use_distributed_barrier']
  if not flag.present:
    flag.value, flag.present = True, 1
