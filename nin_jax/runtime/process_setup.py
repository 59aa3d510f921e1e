"""Process-wide settings for a nin_jax run: applied by the entry points, never on import.

`configure()` is what `nin-train` and the other console scripts, and every
script under experiments/, call before jax starts. A library user (a notebook,
another training loop) who wants the same behaviour calls it first:

    import nin_jax
    nin_jax.configure_process()

It sets, each only where the user has not:
- TF_CPP_MIN_LOG_LEVEL=1: jaxlib's and TensorFlow's C++ INFO lines (e.g. jaxlib's
  "PjRt-IFRT device count") stay off the console; warnings and errors show.
  jaxlib reads it when its library loads, so this must come before `import jax`.
- the XLA:CPU flags of nin_jax/runtime/xla_cpu.py (read when the first backend starts);
- the gs:// backend of etils.epath and gcsfs's settings (storage.py).
"""

from __future__ import annotations

import os
import sys
import warnings

from nin_jax.runtime import storage
from nin_jax.runtime import xla_cpu


def configure(environ=os.environ) -> None:
  """Applies nin_jax's process settings to `environ` (and fsspec's global config)."""
  if not environ.get('TF_CPP_MIN_LOG_LEVEL'):  # Unset, or set empty by a wrapper.
    environ['TF_CPP_MIN_LOG_LEVEL'] = '1'
  added = xla_cpu.configure(environ)
  if added and environ is os.environ:
    _warn_if_too_late(added)
  storage.use_fsspec_for_buckets(environ)


def _warn_if_too_late(added: list[str]) -> None:
  started = jax_backends_started()
  if started is False:
    return
  why = ('JAX had already started its backends' if started else
         'JAX was imported first and this jax version cannot tell whether its backends started')
  warnings.warn(f'nin_jax.configure_process() ran after {why}, so its XLA:CPU settings '
                f'({" ".join(added)}) may not apply and CPU training may be slower; call '
                'it before using jax.', stacklevel=3)


def jax_backends_started() -> bool | None:
  """Whether jax has started a backend; None when this jax cannot say.

  jax has no public question for it: this asks the private xla_bridge, and
  degrades to None (unknown) where a jax release has moved it.
  """
  if 'jax' not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return None
