"""No silent CPU fallback: accelerators the machine has but jax cannot use stop the run.

A TPU VM or GPU machine whose jax lacks the TPU/CUDA backend otherwise trains
on its CPU, each worker alone as "process 0 of 1", all writing one workdir.
The hardware is detected from the file system, without initialising it:
TPU chips appear as /dev/accel* (v2–v4, v5p) or /dev/vfio/<n> (v5e, v6e), and
the NVIDIA driver as /proc/driver/nvidia/gpus/* (or /dev/nvidia<n>).
"""

from __future__ import annotations

import glob
import os

import jax

INSTALL = {'tpu': "pip install '.[tpu]'", 'gpu': "pip install '.[cuda12]'"}
DESCRIPTION = {'tpu': 'TPU chips', 'gpu': 'NVIDIA GPUs'}


def detect(root: str = '/') -> str | None:
  """'tpu', 'gpu' or None: the accelerator this machine has, read under `root`."""
  def any_of(*patterns):
    return any(glob.glob(os.path.join(root, p)) for p in patterns)
  if any_of('dev/accel[0-9]*', 'dev/vfio/[0-9]*'):
    return 'tpu'
  if any_of('proc/driver/nvidia/gpus/*', 'dev/nvidia[0-9]*'):
    return 'gpu'
  return None


def check_backend(root: str = '/', backend: str | None = None) -> None:
  """Raises ValueError if the machine has an accelerator but jax's backend is the CPU.

  Args:
    root: where /dev and /proc are (tests point it at a fake tree).
    backend: jax's default backend (default: asks jax, which starts it).
  """
  found = detect(root)
  if found is None:
    return
  backend = backend or jax.default_backend()
  if backend != 'cpu':
    return
  raise ValueError(
      f'this machine has {DESCRIPTION[found]} but jax {jax.__version__} runs on the '
      f'CPU (its {found.upper()} backend is not installed); install it with '
      f'`{INSTALL[found]}` in the repository, or pass --allow_cpu to train on the '
      'CPU anyway')
