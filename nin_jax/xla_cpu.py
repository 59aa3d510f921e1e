"""XLA:CPU settings this project measured to matter, applied on import.

jaxlib 0.10 hands convolutions to YNNPACK by default. YNNPACK's weight
gradient of a 5×5 convolution is slow: NIN-CIFAR trains at 75 img/s with it
and at 110 img/s when convolutions stay on XLA's Eigen kernels while dots and
reductions still go to YNNPACK (2-core Xeon, batch 128; docs/benchmarks.md).
The flags are read when the first backend starts, so this must run before any
array exists; it is a no-op for GPU/TPU, and a value the user already put in
XLA_FLAGS wins.
"""

from __future__ import annotations

import os
import warnings

YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_FUSION_TYPES = 'dot,reduce'


def configure(environ=os.environ) -> bool:
  """Adds the YNNPACK fusion flag to XLA_FLAGS; True if it was added."""
  flags = environ.get('XLA_FLAGS', '')
  if YNN_FUSION_FLAG in flags:
    return False
  environ['XLA_FLAGS'] = f'{flags} {YNN_FUSION_FLAG}={YNN_FUSION_TYPES}'.strip()
  from jax._src import xla_bridge  # Private, but the only way to ask.
  if environ is os.environ and xla_bridge.backends_are_initialized():
    warnings.warn('nin_jax was imported after JAX started its backends, so its XLA:CPU '
                  f'setting ({YNN_FUSION_FLAG}={YNN_FUSION_TYPES}) does not apply; '
                  'CPU training will be slower. Import nin_jax first.')
  return True
