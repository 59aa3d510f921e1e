"""Elements made by index in Grain worker processes, in index order.

`stream(make, first, count, workers)` yields make(first), make(first + 1), ...
Each element is made whole in one worker (element i in worker i mod workers)
and Grain interleaves them back in order, so what comes out does not depend
on the number of workers; with 0 workers `make` runs in this process. Worker
processes decode outside this process's GIL, which is what lets the input
scale with cores (tf.data threads could not: they shared one GIL).

Nothing here imports TensorFlow; `make` must be picklable (a module-level
function or an object of a module-level class): workers are spawned.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterator

# A range long enough to never end (Grain's datasets have a length).
FOREVER = 2**62
# Batches each worker makes ahead of the one being consumed.
PER_WORKER_BUFFER = 2


def host_cores() -> int:
  """The cores this process may run on (the container's share, not the machine's)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
  """config.dataset.workers: -1 means one worker per core of this host."""
  return host_cores() if workers < 0 else workers


def stream(make: Callable[[int], Any], first: int, count: int,
           workers: int) -> Iterator[Any]:
  """make(i) for i in [first, first + count), in order, made by `workers` processes."""
  import grain
  ds = grain.MapDataset.range(first, first + count).map(make)
  # Each worker makes one element at a time: its parallelism is the process.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if workers > 0:
    _take_grain_flag_defaults()
    ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers,
                                     per_worker_buffer_size=PER_WORKER_BUFFER),
        worker_init_fn=_init_worker)
  iterator = iter(ds)
  try:
    yield from iterator
  finally:  # Stops the workers now rather than at garbage collection.
    iterator.close()


def _take_grain_flag_defaults() -> None:
  """Grain reads its settings from absl flags; outside an absl app (tests, a
  notebook) they are unparsed and Grain would fail, so their defaults apply."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _init_worker(index: int, count: int) -> None:
  """In each worker: one OpenCV thread (the worker is the unit of parallelism),
  and an exit when the training process is gone."""
  del index, count
  try:
    import cv2
    cv2.setNumThreads(1)
  except ImportError:
    pass
  parent = os.getppid()
  threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int, interval_s: float = 0.5) -> None:
  """A SIGKILLed parent cannot stop its workers; a worker blocked on its full
  queue would otherwise live on, holding memory, until the machine reboots."""
  while os.getppid() == parent:
    time.sleep(interval_s)
  os._exit(1)
