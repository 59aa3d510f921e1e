"""One writer per workdir: a lock file naming the run that holds it.

`<workdir>/workdir.lock` holds the holder's host, pid, start time and a
heartbeat the holder rewrites every `HEARTBEAT_S`. A second run on the same
workdir is refused, naming the holder and how to take the lock over by hand.
A lock whose holder is gone is taken over with a warning: when its heartbeat
is older than `STALE_AFTER_S` (a live run refreshes it, so on any host that
means the run is gone, or hung), and on the same host also when its process
no longer exists. A same-host holder that is stopped (Ctrl-Z, SIGSTOP) keeps
its lock: it would write again once continued.

Creation is atomic: a local (or NFS) lock is a hard link of a complete file,
which fails if the lock exists; a gs:// lock is an object written with the
precondition "generation 0" (does not exist yet), and taken over and
refreshed with "generation = the one I read", so two runs never both win.
In a multi-process run only process 0 takes the lock, for all of them.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import socket
import threading
import time
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath

LOCK_FILE = 'workdir.lock'
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class WorkdirLockedError(ValueError):
  """Another live run holds the workdir."""


class WorkdirLock:
  """The lock on one workdir; `acquire` it, `release` it when the run ends."""

  def __init__(self, workdir: str, *, heartbeat_s: float = HEARTBEAT_S,
               stale_after_s: float = STALE_AFTER_S):
    self.path = epath.Path(workdir) / LOCK_FILE
    self._store = _GcsObject(self.path) if str(self.path).startswith('gs://') else _LocalFile(self.path)
    self._heartbeat_s, self._stale_after_s = heartbeat_s, stale_after_s
    now = time.time()
    self._record = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': now,
                    'started_utc': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now)),
                    'process_start': _process_start(os.getpid()), 'token': uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirLockedError naming the live holder."""
    for _ in range(20):
      if self._store.create(self._payload()):
        break
      holder, version = self._store.read()
      if holder is None:  # Gone since, or not JSON: written by hand or damaged.
        age = None if version is None else time.time() - version[1]
        if age is not None and age > self._stale_after_s:
          logging.warning('removing the unreadable lock %s, last written %.0f s ago',
                          self.path, age)
          self._store.remove(version)
        time.sleep(0.1)
        continue
      reason = self._stale_reason(holder)
      if reason is None:
        raise WorkdirLockedError(
            f'workdir {self.path.parent} is in use by another run: pid {holder["pid"]} on '
            f'{holder["host"]}, started {holder.get("started_utc", "?")}, '
            f'{_heartbeat_age(holder)}{_if_stopped(holder)} (lock {self.path}). Wait for it '
            f'to end or stop it, or use another --workdir. '
            f'{_take_over_by_hand(self.path, holder)}')
      logging.warning('taking over the lock of %s: the run that held it (pid %s on %s, '
                      'started %s) counts as gone: %s', self.path.parent, holder['pid'],
                      holder['host'], holder.get('started_utc', '?'), reason)
      if self._store.take_over(self._payload(), version):  # Only if still that holder's.
        break
    else:
      if holder is None and version is not None:
        raise WorkdirLockedError(
            f'the lock {self.path} is unreadable (not JSON), last written '
            f'{age:.0f} s ago; it counts as a live run\'s until it is '
            f'{self._stale_after_s:.0f} s old. If no run uses {self.path.parent}, delete it.')
      raise WorkdirLockedError(f'could not take the lock {self.path}: it keeps changing '
                               f'(runs starting at once?). {_take_over_by_hand(self.path)}')
    self._thread = threading.Thread(target=self._beat, name='workdir-lock-heartbeat',
                                    daemon=True)
    self._thread.start()

  def release(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    holder, version = self._store.read()
    if holder is not None and holder.get('token') == self._record['token']:
      self._store.remove(version)

  def _payload(self) -> str:
    return json.dumps({**self._record, 'heartbeat': time.time()})

  def _beat(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      try:
        holder, version = self._store.read()
        if holder is None or holder.get('token') != self._record['token']:
          logging.error('the lock %s is no longer this run\'s (taken over after a stall?); '
                        'another run may now write to this workdir', self.path)
          return
        self._store.replace(self._payload(), version)
      except OSError as e:  # Storage hiccup: the next beat tries again.
        logging.warning('could not refresh %s: %s', self.path, e)

  def _stale_reason(self, holder: dict) -> str | None:
    """Why the holder is gone, or None if it may still be running."""
    age = time.time() - float(holder.get('heartbeat', 0))
    stale = age > self._stale_after_s  # A running holder refreshes every heartbeat_s.
    if holder.get('host') != socket.gethostname():
      return f'no heartbeat for {age:.0f} s' if stale else None
    pid = int(holder.get('pid', -1))
    if not _alive(pid):
      return f'process {pid} no longer exists'
    started = holder.get('process_start')
    if started is not None and _process_start(pid) not in (None, started):
      return f'pid {pid} now belongs to another process'
    if stale and not _stopped(pid):  # A stopped holder would write again once continued.
      return (f'no heartbeat for {age:.0f} s although pid {pid} is alive (hung, or '
              'not the run that took the lock)')
    return None


@contextlib.contextmanager
def held(workdir: str):
  """The workdir's lock for the duration of a run; process 0 holds it for all."""
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
  error = None
  if lock is not None:
    try:
      lock.acquire()
    except WorkdirLockedError as e:
      error = e
  if jax.process_count() > 1:  # Every process must stop if process 0 could not lock.
    from jax.experimental import multihost_utils
    locked = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not locked and error is None:
      error = WorkdirLockedError(f'workdir {workdir} is in use by another run '
                                 '(process 0 names it). '
                                 + _take_over_by_hand(epath.Path(workdir) / LOCK_FILE))
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()


def _heartbeat_age(holder: dict) -> str:
  if 'heartbeat' not in holder:
    return 'no heartbeat recorded'
  return f'last heartbeat {time.time() - float(holder["heartbeat"]):.0f} s ago'


def _take_over_by_hand(path, holder: dict | None = None) -> str:
  """How to take the lock over safely by hand: the holder must be gone first."""
  who = (f'pid {holder["pid"]} on {holder["host"]} has ended (e.g. `ps -p {holder["pid"]}` '
         f'there)' if holder else 'no run uses the workdir')
  return (f'To take the lock over by hand, make sure {who}, then delete {path} and rerun; '
          f'a lock whose heartbeat is over {STALE_AFTER_S:.0f} s old is taken over by itself.')


def _if_stopped(holder: dict) -> str:
  if holder.get('host') != socket.gethostname() or not _stopped(int(holder.get('pid', -1))):
    return ''
  return f', stopped (Ctrl-Z? `kill -CONT {holder["pid"]}` continues it)'


def _stopped(pid: int) -> bool:
  """Whether the process is stopped (state T, e.g. Ctrl-Z), not merely idle."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] in ('T', 't')
  except (OSError, IndexError):
    return False


def _alive(pid: int) -> bool:
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


def _process_start(pid: int) -> int | None:
  """The process's start time in clock ticks since boot (tells a reused pid apart)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


class _LocalFile:
  """The lock as a file on a POSIX file system (local disk, NFS)."""

  def __init__(self, path: epath.Path):
    self.path = str(path)

  def create(self, text: str) -> bool:
    tmp = f'{self.path}.{os.getpid()}.{uuid.uuid4().hex[:8]}'
    with open(tmp, 'w') as f:
      f.write(text)
    try:
      os.link(tmp, self.path)  # Atomic, and fails if the lock exists.
      return True
    except FileExistsError:
      return False
    finally:
      os.unlink(tmp)

  def read(self):
    """(holder or None if unreadable, version or None if absent)."""
    try:
      stat = os.stat(self.path)
      with open(self.path) as f:
        text = f.read()
    except FileNotFoundError:
      return None, None
    version = (stat.st_ino, stat.st_mtime)
    try:
      return json.loads(text), version
    except ValueError:
      return None, version

  def take_over(self, text: str, version) -> bool:
    self.remove(version)
    return self.create(text)

  def replace(self, text: str, version) -> None:
    tmp = f'{self.path}.{os.getpid()}.beat'
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, self.path)

  def remove(self, version) -> None:
    """Removes the lock if it is still `version`; someone else's new lock stays."""
    aside = f'{self.path}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    try:
      os.rename(self.path, aside)  # Atomic: of two runs taking over, one renames it.
    except FileNotFoundError:
      return
    stat = os.stat(aside)
    if version is not None and (stat.st_ino, stat.st_mtime) != version:
      try:
        os.link(aside, self.path)  # Not the lock we judged: put it back.
      except FileExistsError:
        pass
    os.unlink(aside)


class _GcsObject:
  """The lock as a Cloud Storage object, guarded by generation preconditions.

  Spoken through gcsfs's HTTP session (the one epath already uses for the
  workdir): the JSON API's ifGenerationMatch on upload and on delete.
  """

  def __init__(self, path: epath.Path):
    from etils.epath import backend
    self._fs = backend.fsspec_backend.fs(str(path))
    self._bucket, _, self._name = str(path)[len('gs://'):].partition('/')

  def _upload(self, text: str, generation) -> None:
    """Writes the object if its generation is `generation` (0: it does not exist)."""
    upload_url = self._fs.base.replace('/storage/v1/', '/upload/storage/v1/')
    body = ('--==0==\nContent-Type: application/json; charset=UTF-8\n\n'
            + json.dumps({'name': self._name}) + '\n--==0==\n'
            'Content-Type: application/json\n\n' + text + '\n--==0==--')
    self._fs.call('POST', upload_url + 'b/{}/o', self._bucket, uploadType='multipart',
                  ifGenerationMatch=str(generation), data=body.encode(),
                  headers={'Content-Type': 'multipart/related; boundary="==0=="'})

  def create(self, text: str) -> bool:
    try:
      self._upload(text, 0)
      return True
    except FileExistsError:  # gcsfs's name for HTTP 412, precondition failed.
      return False

  def read(self):
    try:
      headers, content = self._fs.call('GET', 'b/{}/o/{}', self._bucket, self._name,
                                       alt='media')
    except FileNotFoundError:
      return None, None
    # The object's own time, so that a damaged lock goes stale like a file's mtime.
    version = (int(headers['x-goog-generation']),
               email.utils.parsedate_to_datetime(headers['last-modified']).timestamp())
    try:
      return json.loads(content), version
    except ValueError:
      return None, version

  def take_over(self, text: str, version) -> bool:
    """One compare-and-swap: of two runs taking over, one upload matches."""
    try:
      self._upload(text, version[0])
      return True
    except FileExistsError:
      return False

  def replace(self, text: str, version) -> None:
    try:
      self._upload(text, version[0])
    except FileExistsError as e:
      raise OSError(f'lock changed under this run: {e}') from None

  def remove(self, version) -> None:
    generation = {} if version is None else {'ifGenerationMatch': str(version[0])}
    try:
      self._fs.call('DELETE', 'b/{}/o/{}', self._bucket, self._name, **generation)
    except (FileExistsError, FileNotFoundError):
      pass
