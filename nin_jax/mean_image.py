"""The per-pixel mean image of a training set, computed once and cached.

Caffe's `compute_image_mean` wrote the mean of every (warped) training image,
pixel by pixel, to a `mean_file` that the data layer subtracted; the authors'
MNIST data provider did the same. The mean is accumulated in float64 over
batches, so it does not drift with the number of images, and kept in pixel
units (0–255) as float32 (H, W, C).

The cache file (`.npy`, written atomically through etils.epath, so a gs://
directory works) is keyed by the caller; a file of the wrong shape is
recomputed with a warning.
"""

from __future__ import annotations

import io
import os
import uuid
from typing import Callable, Iterable

import numpy as np
from absl import logging
from etils import epath

from nin_jax import tensorflow_loader


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
  """The mean image stored at `path`, or `compute()` written there first."""
  path = epath.Path(path)
  if path.exists():
    try:
      cached = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      logging.warning('mean image %s is unreadable (%s); recomputing.', path, e)
    else:
      if cached.shape == tuple(shape) and np.all(np.isfinite(cached)):
        logging.info('Loaded the mean image from %s', path)
        return cached.astype(np.float32)
      logging.warning('mean image %s has shape %s, not %s; recomputing.', path,
                      cached.shape, tuple(shape))
  mean = np.asarray(compute(), np.float32)
  if mean.shape != tuple(shape):
    raise ValueError(f'computed mean image has shape {mean.shape}, not {tuple(shape)}')
  buffer = io.BytesIO()
  np.save(buffer, mean, allow_pickle=False)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.tmp_{uuid.uuid4().hex}_{path.name}'
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(path)  # Readers never see half a file.
  logging.info('Wrote the mean image to %s', path)
  return mean


def imagenet_mean_image(data_dir: str | None, cache_dir: str | os.PathLike[str],
                        *, batch_size: int = 256) -> np.ndarray:
  """The mean (256, 256, 3) of the warped ImageNet training images (the zoo's mean_file).

  One pass over the 1.28M training images the first time (every process reads
  the whole split, so all hosts subtract the same mean), then read from
  `cache_dir/mean_image_imagenet2012_<N>_256.npy`.
  """
  from nin_jax import imagenet_input
  tf, tfds = tensorflow_loader.tensorflow(), tensorflow_loader.tfds()
  builder = tfds.builder(imagenet_input.TFDS_NAME, data_dir=data_dir)
  size = imagenet_input.RESIZE

  def compute():
    logging.info('Computing the ImageNet mean image (one pass over the training set)')
    ds = builder.as_dataset(split='train', as_supervised=True, shuffle_files=False)
    ds = ds.map(lambda image, _: tf.image.resize(tf.cast(image, tf.float32), (size, size)),
                num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return mean_image(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))

  splits = builder.info.splits
  count = splits['train'].num_examples if len(splits) else 'unknown'
  path = epath.Path(cache_dir) / f'mean_image_{imagenet_input.TFDS_NAME}_{count}_{size}.npy'
  return cached_mean_image(path, (size, size, 3), compute)
