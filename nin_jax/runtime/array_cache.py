"""Arrays computed once and kept in a file: ImageNet's mean image, a fitted ZCA.

A cache file is `.npy` (one array) or `.npz` (named arrays), in a local
directory or a gs:// bucket (through etils.epath), written with
`storage.write_atomic`, so a reader never sees half a file. It is read back
only if it holds every expected array, of the expected shape, finite; else
`read` warns and the caller computes the arrays again and rewrites the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Mapping

import numpy as np
from absl import logging
from etils import epath

from nin_jax.runtime import storage


def read(path: str | os.PathLike[str], shapes: Mapping[str, tuple[int, ...]], *,
         what: str) -> dict[str, np.ndarray] | None:
  """The arrays named in `shapes` from the cache file at `path`, or None to recompute.

  None when there is no file, and with a warning (naming it as `what`) when it
  is unreadable, lacks one of the arrays, or has one of another shape or with
  a value that is not finite. A `.npy` file holds the one array `shapes` names.
  """
  path = epath.Path(path)
  if not path.exists():
    return None
  try:
    arrays = _load(path.read_bytes(), list(shapes))
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    logging.warning('%s %s is unreadable (%s: %s); recomputing it.', what, path,
                    type(e).__name__, e)
    return None
  found = {name: array.shape for name, array in arrays.items()}
  if found != {name: tuple(shape) for name, shape in shapes.items()} or not all(
      map(_finite, arrays.values())):
    logging.warning('%s %s has bad contents (shapes %s, expected %s, or values that are '
                    'not finite); recomputing it.', what, path, found, dict(shapes))
    return None
  return arrays


def write(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
  """Writes `arrays` to the cache file at `path` (`.npy`: the one array; else `.npz`)."""
  path = epath.Path(path)
  buffer = io.BytesIO()
  if path.suffix == '.npy':
    (array,) = arrays.values()
    np.save(buffer, array, allow_pickle=False)
  else:
    np.savez(buffer, **arrays)
  path.parent.mkdir(parents=True, exist_ok=True)
  storage.write_atomic(path, buffer.getvalue())


def _load(raw: bytes, names: list[str]) -> dict[str, np.ndarray]:
  loaded = np.load(io.BytesIO(raw), allow_pickle=False)
  if isinstance(loaded, np.ndarray):  # A .npy file: one array.
    if len(names) != 1:
      raise ValueError(f'one array where {names} were expected')
    return {names[0]: loaded}
  with loaded:
    return {name: np.array(loaded[name]) for name in names}


def _finite(array: np.ndarray) -> bool:
  return not np.issubdtype(array.dtype, np.inexact) or bool(np.all(np.isfinite(array)))
