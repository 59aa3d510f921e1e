"""How many train steps one compiled call runs, and where the training split lives.

On an accelerator a NIN step needs well under a millisecond of compute, so the
host's per-step work (Python, dispatch, batch copies) would become the step
time. Two things remove it: the training split held on the device (the host
then sends only indices), and k steps per dispatch (`steps.train_steps`).

The loop cuts the run into chunks of at most k steps so that every boundary
where it must look at the state (log, eval, checkpoint, test pause, the end)
falls exactly at a chunk's end: a boundary inside a chunk shortens it. Chunk
sizes are k and the powers of two below it, so however the boundaries fall a
run compiles at most floor(log2 k) + 2 step programs (6 for k = 32: 32, 16,
8, 4, 2 and the single step), and only those its boundaries ask for.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from nin_jax.data import datasets

# Steps per dispatch when config.steps_per_dispatch = 0 (auto) on an
# accelerator with the data on device: the loop's per-dispatch cost (about a
# millisecond of host time) then falls to a few percent of a sub-ms step.
AUTO_STEPS_PER_DISPATCH = 32
# The replicated training split may take this share of one device's memory;
# the rest is for the model, optimizer state and activations.
DEVICE_MEMORY_SHARE = 0.5


def steps_per_dispatch(requested: int, data_on_device: bool, backend: str) -> int:
  """config.steps_per_dispatch, or for 0 (auto): 32 on an accelerator with the
  data on device, else 1 (on CPU the step's compute dwarfs the host's work)."""
  if requested:
    return requested
  return AUTO_STEPS_PER_DISPATCH if data_on_device and backend != 'cpu' else 1


def chunk_sizes(k: int) -> tuple[int, ...]:
  """The chunk lengths a run with k steps per dispatch may use, largest first."""
  sizes = {k} | {2 ** i for i in range(k.bit_length()) if 2 ** i < k}
  return tuple(sorted(sizes, reverse=True))


def next_chunk(step: int, k: int, total_steps: int, periods, stops=()) -> int:
  """Steps to run after `step`: as many as k allows without passing the end,
  a multiple of any of `periods`, or any step in `stops`."""
  room = total_steps - step
  for period in periods:
    room = min(room, period - step % period)
  for stop in stops:
    if stop > step:
      room = min(room, stop - step)
  return next(n for n in chunk_sizes(k) if n <= room)


def stack_batches(batches, n: int):
  """The next n batches of an iterator, stacked on a new leading (step) axis."""
  return jax.tree.map(lambda *xs: np.stack(xs), *[next(batches) for _ in range(n)])


def fits_on_device(split_bytes: int, device_bytes: int | None) -> bool:
  return device_bytes is not None and split_bytes <= DEVICE_MEMORY_SHARE * device_bytes


def data_on_device(dataset_config, data, backend: str) -> bool:
  """Whether the training split lives on the device(s).

  dataset.on_device True / False is obeyed; None (auto) puts an in-memory
  split on an accelerator when it takes at most half of one device's memory
  (it is replicated on every device), else streams batches from the host with
  a one-line notice. On CPU, auto streams from the host: it costs nothing
  there, and the host pipeline is what CPU runs have always used. Every
  process decides alike: the split and the device kind are the same on all.
  """
  setting = dataset_config.on_device
  if setting is not None:
    return bool(setting)
  if backend == 'cpu' or dataset_config.name in datasets.STREAMED:
    return False
  split_bytes = data.train_images.nbytes + data.train_labels.nbytes
  stats = jax.local_devices()[0].memory_stats() or {}
  device_bytes = stats.get('bytes_limit')
  if fits_on_device(split_bytes, device_bytes):
    return True
  logging.warning('dataset.on_device=auto: the %.2f GB training split %s; streaming '
                  'batches from the host', split_bytes / 1e9,
                  'needs more than half of one device\'s '
                  f'{device_bytes / 1e9:.1f} GB' if device_bytes else
                  'may not fit (this device reports no memory size)')
  return False
