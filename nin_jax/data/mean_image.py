"""The per-pixel mean image of a training set, computed once and cached.

Caffe's `compute_image_mean` wrote the mean of every (warped) training image,
pixel by pixel, to a `mean_file` that the data layer subtracted; the authors'
MNIST data provider did the same. The mean is accumulated in float64 over
batches (ImageNet's: exact integer sums of its uint8 warped images), so it does
not drift with the number of images, and kept in pixel units (0–255) as
float32 (H, W, C).

ImageNet's is computed once per dataset, by all hosts together, and written
(`.npy`, atomically, through etils.epath, so a gs:// directory works) beside
the dataset or where the caller says; every later run, on any host or a
recreated VM, reads it back. A file of the wrong shape is recomputed with a
warning.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np
from absl import logging
from etils import epath

from nin_jax.data import grain_stream
from nin_jax.data import imagenet_input
from nin_jax.runtime import array_cache


def mean_image(batches: Iterable[np.ndarray]) -> np.ndarray:
  """The per-pixel mean (H, W, C) float32 of image batches (N, H, W, C), in their units."""
  total, count = None, 0
  for batch in batches:
    batch = np.asarray(batch)
    part = batch.sum(axis=0, dtype=np.float64)
    total = part if total is None else total + part
    count += batch.shape[0]
  if not count:
    raise ValueError('mean_image needs at least one image')
  return (total / count).astype(np.float32)


def cached_mean_image(path: str | os.PathLike[str], shape: tuple[int, ...],
                      compute: Callable[[], np.ndarray]) -> np.ndarray:
  """The mean image stored at `path`, or `compute()` written there first.

  Decided once for every host: unless every process reads the file, all of
  them compute (`compute` may be collective) and process 0 writes it.
  """
  import jax  # Here: decode workers import this module (WarpedSum) and never need jax.
  from nin_jax.runtime import sharding
  path = epath.Path(path)
  cached = _read_mean(path, tuple(shape))
  if all(sharding.gather_from_processes(int(cached is not None))):
    logging.info('Loaded the mean image from %s', path)
    return cached
  mean = np.asarray(compute(), np.float32)
  if mean.shape != tuple(shape):
    raise ValueError(f'computed mean image has shape {mean.shape}, not {tuple(shape)}')
  if jax.process_index() == 0:
    _write_mean(path, mean)
  return mean


def _read_mean(path: epath.Path, shape: tuple[int, ...]) -> np.ndarray | None:
  cached = array_cache.read(path, {'mean': shape}, what='mean image')
  return None if cached is None else cached['mean'].astype(np.float32)


def _write_mean(path: epath.Path, mean: np.ndarray) -> None:
  array_cache.write(path, {'mean': mean})
  logging.info('Wrote the mean image to %s', path)


def imagenet_mean_image(images, cache_dir: str | os.PathLike[str] = '', *,
                        workers: int = 0) -> np.ndarray:
  """The mean (256, 256, 3) of the warped ImageNet training images (the zoo's mean_file).

  `images` is a split of nin_jax.data.imagenet_input (TFDS's or the pre-resized
  cache's). The first time, each process sums the warped images of its share
  of the split (decoded by `workers` processes) and the sums are added across
  processes; then it is read from
  `<cache_dir or beside the dataset>/mean_image_<name>_<N>_256.npy`.
  """
  size = imagenet_input.RESIZE
  directory = epath.Path(cache_dir or images.directory)
  path = directory / f'mean_image_{images.name}_{len(images)}_{size}.npy'

  def compute():
    logging.info('Computing the ImageNet mean image (one pass over the training set, '
                 'shared by all hosts)')
    total = _sum_across_processes(_warped_sum_of_this_process(images, workers))
    return total / len(images)

  return cached_mean_image(path, (size, size, 3), compute)


class WarpedSum:
  """Chunk c of records [start, stop) → the int64 sum of their warped images."""

  def __init__(self, images, start: int, stop: int, chunk: int):
    self.images, self.start, self.stop, self.chunk = images, start, stop, chunk

  def __call__(self, c: int) -> np.ndarray:
    first = self.start + int(c) * self.chunk
    total = np.zeros((imagenet_input.RESIZE, imagenet_input.RESIZE, 3), np.int64)
    for index in range(first, min(first + self.chunk, self.stop)):
      total += imagenet_input.decode_warp(self.images[index][0])
    return total


def _warped_sum_of_this_process(images, workers: int, chunk: int = 256) -> np.ndarray:
  """The exact sum of this process's contiguous share of `images`, warped."""
  import jax
  n, p, count = len(images), jax.process_index(), jax.process_count()
  start, stop = p * n // count, (p + 1) * n // count
  chunks = -(-(stop - start) // chunk)
  parts = grain_stream.stream(WarpedSum(images, start, stop, chunk), 0, chunks,
                              min(grain_stream.resolve_workers(workers), chunks))
  return sum(parts, np.zeros((1, 1, 3), np.int64))


def _sum_across_processes(total: np.ndarray) -> np.ndarray:
  """int64 sums added over all processes, exactly (collectives move 32-bit words)."""
  import jax
  if jax.process_count() == 1:
    return total
  from jax.experimental import multihost_utils
  words = np.stack([total >> 24, total & 0xFFFFFF]).astype(np.int32)
  gathered = np.asarray(multihost_utils.process_allgather(words)).astype(np.int64)
  return (gathered[:, 0] << 24).sum(0) + gathered[:, 1].sum(0)
