"""TensorFlow and TFDS, loaded only by the paths that read TFDS data.

They are the optional `tfds` extra (`pip install 'nin_jax[tfds]'`): the IDX
reader, the metric writers and the model never need them. Loading them here
gives every such path the same three guarantees:

- a missing extra is one message naming the install command;
- TensorFlow never takes accelerator memory (its devices are hidden);
- its C++ start-up INFO lines stay off the console. TensorFlow logs them
  through absl while its libraries load ("oneDNN custom operations are on" on
  CPUs with AVX-512 VNNI/BF16, "This TensorFlow binary is optimized..."), before
  TF_CPP_MIN_LOG_LEVEL applies, so the import runs with the process's stderr
  captured, and every line but those INFO ones is written back.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from typing import Any, Iterator

INSTALL_HINT = "pip install 'nin_jax[tfds]'"

# absl/glog INFO records ("I1130 02:15:22.1 ... port.cc:153] ...") and the banner
# absl prints before its first record; a cpu_feature_guard INFO record's second line.
_START_UP_NOISE = re.compile(
    r'^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ |'
    r'WARNING: All log messages before absl::InitializeLog\(\) is called|'
    r'To enable the following instructions: .* rebuild TensorFlow)')


class NotInstalledError(ImportError):
  """TensorFlow / TFDS is needed but not installed; the message says how to get it."""


def _findable(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):  # A broken install is not an installed one.
    return False


@functools.cache
def tensorflow() -> Any:
  """`import tensorflow`, quietly, with its GPUs and TPUs hidden."""
  tf = _import_quietly('tensorflow')
  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # Already initialised, or a device kind this build does not know.
  return tf


@functools.cache
def tfds() -> Any:
  """`import tensorflow_datasets`, after `tensorflow()`."""
  tensorflow()
  return _import_quietly('tensorflow_datasets')


def _import_quietly(name: str) -> Any:
  if not _findable(name):
    raise NotInstalledError(
        f'reading TFDS data needs TensorFlow Datasets, which is not installed '
        f'({name} is missing); install it with {INSTALL_HINT}')
  if name in sys.modules:
    return sys.modules[name]
  with _start_up_noise_filtered():
    return importlib.import_module(name)


@contextlib.contextmanager
def _start_up_noise_filtered() -> Iterator[None]:
  """Runs the body with file descriptor 2 captured; writes back all but _START_UP_NOISE."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode(errors='replace').splitlines(True)
              if not _START_UP_NOISE.match(line)]
      if kept:
        os.write(2, ''.join(kept).encode())
