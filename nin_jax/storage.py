"""Workdir files through etils.epath: a local directory and a gs:// bucket alike.

Every file a run writes under its workdir goes through `epath.Path`. For
gs:// paths epath uses fsspec + gcsfs (nin_jax/__init__.py selects that
backend over tf.io.gfile; see `use_fsspec_for_buckets`), and Orbax's arrays go
through tensorstore's own GCS driver. Object stores have no append and no
atomic rename, so:

- `append` rewrites a remote object with the new bytes at its end (the files
  appended to, metrics.jsonl and TensorBoard events, stay small);
- `write_atomic` writes a local file beside its target and renames it over;
  a remote object is replaced whole by one upload, which is already atomic.
"""

from __future__ import annotations

import functools
import io
import os
import re

from etils import epath

URL_SCHEMES = ('gs://',)  # What the workdir lock and the tests cover.


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
    return
  old = path.read_bytes() if path.exists() else b''
  path.write_bytes(old + raw)


def write_atomic(path: epath.Path, data: str | bytes) -> None:
  """Replaces the file at `path` so that a reader sees the old or the new content."""
  raw = data.encode() if isinstance(data, str) else data
  if is_remote(path):
    path.write_bytes(raw)  # One upload: the object changes all at once.
    return
  tmp = path.parent / f'{path.name}.tmp'
  tmp.write_bytes(raw)
  os.replace(tmp, path)


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
