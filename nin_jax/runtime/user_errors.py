"""Failures the user can act on, said once, without the libraries' tracebacks.

A full disk surfaces in Orbax's background threads, in tensorstore and in our
own writes, each logging its own traceback before the run stops; it is one
user error: the path and its free space. After a failed restore, tensorstore
callbacks can land on Orbax's closed asyncio loop ("Event loop is closed"),
which is shutdown noise. `quiet_library_noise` drops exactly these records;
a bug in our code still shows its traceback.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sys
import traceback


class DiskFullError(ValueError):
  """The workdir's file system has no space left."""


def is_out_of_space(error: BaseException | None) -> bool:
  """Whether `error`, or any exception it was raised from, is a full disk."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(error)
    if 'No space left on device' in text or 'RESOURCE_EXHAUSTED' in text:
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full_error(workdir: str) -> DiskFullError:
  try:
    free = shutil.disk_usage(workdir).free
    free = f'{free / 2**20:.1f} MiB free' if free >= 2**20 else f'{free // 1024} KiB free'
  except OSError:
    free = 'free space unknown'
  return DiskFullError(f'no space left on the device of {workdir} ({free}); free some '
                       'space or use another --workdir, then rerun the same command to '
                       'resume from the last checkpoint')


class _NoiseFilter(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if is_out_of_space(error) or 'No space left on device' in record.getMessage():
      return False  # Said once, by the caller, with the path.
    if 'Event loop is closed' in record.getMessage() or (
        isinstance(error, RuntimeError) and 'Event loop is closed' in str(error)):
      return False
    return True


_NOISE = _NoiseFilter()


def quiet_library_noise() -> None:
  """Drops the records described above from absl's and asyncio's loggers, for good.

  For good: the library threads that log them can outlive the call that failed.
  """
  for name in ('absl', 'asyncio'):
    logger = logging.getLogger(name)
    if _NOISE not in logger.filters:
      logger.addFilter(_NOISE)
  if not getattr(sys.unraisablehook, 'quiets_closed_loop', False):
    sys.unraisablehook = _without_closed_loop(sys.unraisablehook)


def _is_closed_loop(error: BaseException | None, tb) -> bool:
  frames = traceback.extract_tb(tb)
  return (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'
          and bool(frames) and frames[0].name == 'call_soon_threadsafe')


def _without_closed_loop(hook):
  """sys.unraisablehook minus the closed-loop error of tensorstore's late callbacks.

  tensorstore reports an exception raised in a Python callback it runs with
  PyErr_WriteUnraisable: those callbacks call `call_soon_threadsafe` on
  Orbax's asyncio loop after Orbax has closed it.
  """
  def quiet_hook(unraisable):
    if not _is_closed_loop(unraisable.exc_value, unraisable.exc_traceback):
      hook(unraisable)
  quiet_hook.quiets_closed_loop = True
  return quiet_hook
