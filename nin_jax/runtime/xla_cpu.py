"""XLA:CPU settings this project measured to matter (process_setup.configure applies them).

  --xla_cpu_experimental_ynn_fusion_type=reduce
      jaxlib 0.10 hands convolutions and dots to YNNPACK by default, and
      YNNPACK's weight gradient of a 5×5 convolution is slow: NIN-CIFAR trains
      at 90 img/s that way, 121–124 img/s with convolutions on XLA's Eigen
      kernels, and 125–129 img/s with dots there too (they then need half the
      transposes); reductions stay on YNNPACK.
  --xla_cpu_enable_concurrency_optimized_scheduler=true
      Schedules independent ops so they can overlap: +3–4% (three
      alternating pairs of runs).
(2-core Xeon, batch 128; docs/benchmarks.md.) XLA reads its flags when the
first backend starts, so they must be set before any array exists. The flags
only concern the CPU backend, and a flag the user already put in XLA_FLAGS
keeps the user's value.
"""

from __future__ import annotations

import os

FLAGS = {
    '--xla_cpu_experimental_ynn_fusion_type': 'reduce',
    '--xla_cpu_enable_concurrency_optimized_scheduler': 'true',
}


def configure(environ=os.environ) -> list[str]:
  """Adds FLAGS to XLA_FLAGS (except those already there); returns what it added."""
  flags = environ.get('XLA_FLAGS', '')
  added = [f'{name}={value}' for name, value in FLAGS.items() if name not in flags]
  if not added:
    return []
  environ['XLA_FLAGS'] = ' '.join([flags, *added]).strip()
  return added
