"""Workdir files through etils.epath: a local directory and a gs:// bucket alike.

Every file a run writes under its workdir goes through `epath.Path`. For
gs:// paths epath uses fsspec + gcsfs (nin_jax/__init__.py selects that
backend over tf.io.gfile; see `use_fsspec_for_buckets`), and Orbax's arrays go
through tensorstore's own GCS driver. Object stores have no append and no
atomic rename, and GCS takes about one write per second to one object, so:

- `append` sends only the new bytes, as an object of their own that GCS
  composes onto the end of the file (one server-side compose): the bytes sent
  grow linearly with the file, which stays one object for every reader;
- `AppendedFile` (metrics.jsonl, TensorBoard events, a trial's train.log)
  keeps a bucket file's appends in memory and sends them at GCS's pace: every
  `UPLOAD_EVERY_S`, at checkpoints, and at the end;
- `write_atomic` writes a local file beside its target and renames it over;
  a remote object is replaced whole by one upload, which is already atomic.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import threading
import time
import uuid

from etils import epath

URL_SCHEMES = ('gs://',)  # What the workdir lock and the tests cover.
UPLOAD_EVERY_S = 30.0  # A bucket's appended files are uploaded this often,
CHECKPOINT_UPLOAD_GAP_S = 10.0  # at checkpoints once the last upload is this old,
LAST_UPLOAD_GAP_S = 1.0  # and at the end at once (GCS: a write a second to one object).


def use_fsspec_for_buckets(environ=os.environ) -> None:
  """Makes epath reach gs:// through fsspec/gcsfs, not TensorFlow's gfile.

  gcsfs and tensorstore honour a GCS emulator (STORAGE_EMULATOR_HOST,
  TENSORSTORE_GCS_HTTP_URL); TensorFlow's GCS file system has its endpoint
  built in. One backend in production and in the tests. Must run before epath
  first opens a gs:// path (it caches the choice); EPATH_USE_TF set by the
  user wins.
  """
  environ.setdefault('EPATH_USE_TF', 'false')
  # gcsfs's default "extended" file system asks a gRPC control-plane client for
  # every bucket's layout (retried on each call when it cannot tell); gRPC's
  # threads can abort the process at exit ("terminate called ... exception not
  # rethrown"). The plain JSON-API file system reads and writes every bucket.
  environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')
  # gcsfs caches directory listings for the life of a process, so a file that
  # another process wrote later (a trial's final_metrics.json seen by the
  # sweep runner, another host's checkpoint) could stay invisible.
  import fsspec.config
  for protocol in ('gs', 'gcs'):
    fsspec.config.conf.setdefault(protocol, {}).setdefault('use_listings_cache', False)


def is_remote(path) -> bool:
  return str(path).startswith(URL_SCHEMES)


def workdir_path(workdir) -> epath.Path:
  """--workdir as an epath.Path: a URL as given, a local path made absolute."""
  if is_remote(workdir):
    return epath.Path(workdir)
  scheme = re.match(r'([a-zA-Z][a-zA-Z0-9+.-]*)://', str(workdir))
  if scheme:  # Else 's3://b/run' would silently become the local directory ./s3:/b/run.
    raise ValueError(f'workdir {workdir}: {scheme.group(1)}:// is not supported; use a '
                     'local path or gs://BUCKET/...')
  return epath.Path(os.path.abspath(workdir))


def is_dangling_link(path: epath.Path) -> bool:
  """A local symlink to nothing (e.g. to unmounted storage); buckets have no links."""
  return not is_remote(path) and os.path.islink(path) and not os.path.exists(path)


def append(path: epath.Path, data: str | bytes) -> None:
  """Adds data at the end of the file at `path` (creating it)."""
  raw = data.encode() if isinstance(data, str) else data
  if not is_remote(path):
    with open(path, 'ab') as f:
      f.write(raw)
  elif raw:
    _compose_onto(path, raw)


def _compose_onto(path: epath.Path, data: bytes) -> None:
  """Appends `data` to the object at `path`: uploads it alone, then composes the two.

  The compose is conditional on the generation read first, so a retried
  request cannot append twice. The part's name has no 'tfevents' in it:
  TensorBoard must not read it as an event file.
  """
  from etils.epath import backend
  fs = backend.fsspec_backend.fs(str(path))
  bucket, _, name = str(path)[len('gs://'):].partition('/')
  try:
    before = fs.call('GET', 'b/{}/o/{}', bucket, name, json_out=True)
  except FileNotFoundError:
    before = {'generation': '0', 'size': '0'}
  part = f'{name.rpartition("/")[0]}/.upload-{uuid.uuid4().hex}'.lstrip('/')
  fs.pipe_file(f'{bucket}/{part}', data)
  sources = ([{'name': name}] if before['generation'] != '0' else []) + [{'name': part}]
  try:
    fs.call('POST', 'b/{}/o/{}/compose', bucket, name, ifGenerationMatch=before['generation'],
            json={'kind': 'storage#composeRequest', 'sourceObjects': sources,
                  'destination': {'name': name, 'bucket': bucket}})
  except FileExistsError:  # 412: changed since read; fine if that was this compose, retried.
    after = fs.call('GET', 'b/{}/o/{}', bucket, name, json_out=True)
    if int(after['size']) != int(before['size']) + len(data):
      raise OSError(f'{path} changed while this run appended to it') from None
  finally:
    with contextlib.suppress(OSError):  # A part left over is only clutter.
      fs.rm_file(f'{bucket}/{part}')


class AppendedFile:
  """A file written at its end: locally at once, in a bucket at GCS's pace.

  Locally each `append` is written at once: a killed run loses no record. In
  a bucket, appends gather in memory. `upload_if_due` sends them when
  `upload_every_s` have passed since the last upload, or when an upload
  asked for by `request_upload` (at a checkpoint) is due:
  CHECKPOINT_UPLOAD_GAP_S after the last one, or at once. `upload_requested`
  sends an asked-for upload without waiting, `upload_all` everything; both
  stay LAST_UPLOAD_GAP_S after the last upload. A killed run loses what was
  not sent.
  """

  def __init__(self, path: epath.Path, *, upload_every_s: float = UPLOAD_EVERY_S):
    self.path, self.remote = path, is_remote(path)
    self._upload_every_s = upload_every_s
    self._pending: list[bytes] = []
    self._last_upload = time.monotonic()
    self._requested_at: float | None = None  # When an asked-for upload is due.
    self._lock = threading.Lock()  # A writer thread and a timer may both upload.

  def append(self, data: str | bytes) -> None:
    raw = data.encode() if isinstance(data, str) else data
    if not self.remote:
      append(self.path, raw)
      return
    with self._lock:
      self._pending.append(raw)

  def request_upload(self) -> None:
    if self._pending and self._requested_at is None:
      gap = min(CHECKPOINT_UPLOAD_GAP_S, self._upload_every_s)
      self._requested_at = max(time.monotonic(), self._last_upload + gap)

  def seconds_until_due(self) -> float | None:
    """Until the next upload; None when nothing waits to be sent."""
    if not self._pending:
      return None
    due = self._last_upload + self._upload_every_s
    if self._requested_at is not None:
      due = min(due, self._requested_at)
    return max(0.0, due - time.monotonic())

  def upload_if_due(self) -> None:
    if self.seconds_until_due() == 0.0:
      self._upload()

  def upload_requested(self) -> None:
    if self._requested_at is not None:
      self._upload()

  def upload_all(self) -> None:
    self._upload()

  def _upload(self) -> None:
    with self._lock:
      if not self._pending:
        return
      time.sleep(max(self._last_upload + LAST_UPLOAD_GAP_S - time.monotonic(), 0.0))
      _compose_onto(self.path, b''.join(self._pending))  # On error all stays pending.
      self._pending, self._last_upload, self._requested_at = [], time.monotonic(), None


def write_atomic(path: epath.Path, data: str | bytes) -> None:
  """Replaces the file at `path` so that a reader sees the old or the new content."""
  raw = data.encode() if isinstance(data, str) else data
  if is_remote(path):
    path.write_bytes(raw)  # One upload: the object changes all at once.
    return
  # A name of its own (two writers never share one), ending in .tmp (event_files skips it).
  tmp = path.parent / f'{path.name}.{uuid.uuid4().hex[:8]}.tmp'
  try:
    with open(tmp, 'wb') as f:
      f.write(raw)
      f.flush()
      os.fsync(f.fileno())  # The new content is on disk before its name is.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def font_family_for(text: str) -> list[str] | None:
  """A matplotlib font family list that draws `text`, or None if the default font does.

  For labels made of user-given names: matplotlib's default font (DejaVu Sans)
  has no CJK, for one, and a workdir named in Chinese would be drawn as boxes
  with a warning per character. The installed fonts that have the missing
  characters follow the default one; what none of them has is drawn by
  matplotlib's Last Resort font (a box naming the character's Unicode block),
  named here so that matplotlib does not warn that it fell back to it.
  """
  from matplotlib import font_manager
  default = font_manager.findfont(font_manager.FontProperties())
  missing = {ord(c) for c in text if c.isprintable()} - _characters_of(default)
  if not missing:
    return None
  families = list(font_manager.FontProperties().get_family())
  installed = font_manager.fontManager.ttflist
  for entry in installed:
    if missing and entry.name not in families + [_LAST_RESORT]:
      if covered := missing & _characters_of(entry.fname):
        families.append(entry.name)
        missing -= covered
  if missing and any(entry.name == _LAST_RESORT for entry in installed):
    families.append(_LAST_RESORT)
  return families


_LAST_RESORT = 'Last Resort High-Efficiency'  # Shipped with matplotlib (3.10 and later).


@functools.cache
def _characters_of(font_path: str) -> frozenset[int]:
  from matplotlib import ft2font
  return frozenset(ft2font.FT2Font(font_path).get_charmap())


def save_figure(fig, path: epath.Path, **kwargs) -> None:
  """matplotlib's savefig, to any epath path."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format=path.suffix.lstrip('.') or 'png', **kwargs)
  path.write_bytes(buffer.getvalue())
