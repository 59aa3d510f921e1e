"""Input normalisation as in the NIN paper (and the Maxout paper it copies).

* CIFAR-10/100: global contrast normalisation + ZCA whitening (:func:`gcn_zca`),
  the pylearn2 pipeline ``GlobalContrastNormalization(scale=55.)`` then
  ``ZCA(filter_bias=.1)`` fitted on the training split.
* SVHN: GCN (scale 1) then local contrast normalisation: nin_jax/data/local_contrast.py.
* Plain per-channel standardisation (:func:`channel_stats`,
  :func:`standardize`) for baselines and MNIST-like data.

Everything is numpy, returns float32, and works in chunks of images so that
whole CIFAR/SVHN splits fit in host memory without float64 copies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

from absl import logging
import numpy as np

from nin_jax.runtime import array_cache

__all__ = [
    'ZCA', 'apply_zca', 'channel_stats', 'fit_gcn_zca', 'fit_zca', 'gcn_zca',
    'global_contrast_normalize', 'standardize',
]

# config.dataset.preprocessing: what input_pipeline does to the images before training.
# gcn_lcn and lcn: nin_jax/data/local_contrast.py; mean_image: nin_jax/data/mean_image.py.
PREPROCESSINGS = ('standardize', 'gcn_zca', 'gcn_lcn', 'lcn', 'mean_image', 'none')

# Images per chunk: 5000 CIFAR images are 61 MB as float32, 123 MB as float64.
CHUNK = 5000


def image_chunks(n: int, size: int = CHUNK):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


def _require_uint8(images: np.ndarray, fn: str) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8:
    # A float input here usually means the data was already scaled; dividing by
    # 255 again would silently shrink it, so refuse instead.
    raise TypeError(f'{fn} expects uint8 images in [0, 255], got {images.dtype}')
  return images


# ----------------------------------------------------------------------------
# Per-channel standardisation
# ----------------------------------------------------------------------------


def channel_stats(images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 images (N, ..., C), in [0, 1] scale.

  Accumulates sums in float64 over chunks, so memory stays bounded and the
  result does not drift with N. Returns float32 arrays of shape (C,).
  """
  images = _require_uint8(images_uint8, 'channel_stats')
  c = images.shape[-1]
  flat = images.reshape(images.shape[0], -1, c)
  count = flat.shape[0] * flat.shape[1]
  if count == 0:
    raise ValueError('channel_stats needs at least one pixel')
  total = np.zeros(c, np.float64)
  total_sq = np.zeros(c, np.float64)
  for sl in image_chunks(flat.shape[0]):
    chunk = flat[sl].astype(np.float64) / 255.0
    total += chunk.sum(axis=(0, 1))
    total_sq += np.square(chunk).sum(axis=(0, 1))
  mean = total / count
  var = np.maximum(total_sq / count - np.square(mean), 0.0)
  return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def standardize(images_uint8: np.ndarray, mean: np.ndarray,
                std: np.ndarray) -> np.ndarray:
  """Returns float32 ``(x / 255 - mean) / std``, broadcasting over the last axis."""
  images = _require_uint8(images_uint8, 'standardize')
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  if np.any(std <= 0):
    raise ValueError(f'std must be positive, got {std}')
  out = images.astype(np.float32)
  out *= np.float32(1.0 / 255.0)
  out -= mean
  out /= std
  return out


# ----------------------------------------------------------------------------
# Global contrast normalisation
# ----------------------------------------------------------------------------


def global_contrast_normalize(images: np.ndarray, scale: float = 55.0,
                              eps: float = 1e-8) -> np.ndarray:
  """Per image: subtract its mean over all pixels and channels, rescale to L2 norm `scale`.

  pylearn2 ``global_contrast_normalize(X, scale=55., sqrt_bias=0.,
  use_std=False, min_divisor=eps)`` on the flattened image x (D values):
  ``y = (x - mean(x)) / (||x - mean(x)||_2 / scale)``; where that divisor is
  below ``eps`` (a constant image) it is replaced by 1, so such an image maps
  to zeros instead of NaN. Scale-invariant in the input, so uint8 or [0, 1]
  inputs give the same result. Returns float32 of the input's shape.
  """
  images = np.asarray(images)
  n = images.shape[0]
  flat = images.reshape(n, -1)
  out = np.empty(flat.shape, np.float32)
  for sl in image_chunks(n):
    x = flat[sl].astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    normalizers = np.sqrt(np.square(x).sum(axis=1)) / scale
    normalizers[normalizers < eps] = 1.0
    x /= normalizers[:, None]
    out[sl] = x
  return out.reshape(images.shape)


# ----------------------------------------------------------------------------
# ZCA whitening
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class ZCA:
  """A fitted ZCA transform: ``y = (x - mean) @ whitening`` on flattened images.

  Attributes:
    mean: (D,) float32 per-feature mean of the fitting data.
    whitening: (D, D) float32 symmetric whitening matrix.
  """
  mean: np.ndarray
  whitening: np.ndarray


def fit_zca(x_flat: np.ndarray, filter_bias: float = 0.1) -> ZCA:
  """Fits pylearn2's ZCA on (N, D) data.

  Centre, covariance ``C = X^T X / N``, eigendecompose ``C = V diag(e) V^T``,
  ``W = V diag(1 / sqrt(e + filter_bias)) V^T``. filter_bias damps the
  directions of tiny variance (the paper uses 0.1 on GCN'd CIFAR), which keeps
  W finite on rank-deficient data such as GCN output (every image sums to 0).
  Computed in float64 in chunks, stored as float32.
  """
  x_flat = np.asarray(x_flat)
  if x_flat.ndim != 2 or x_flat.shape[0] == 0:
    raise ValueError(f'fit_zca expects (N, D) data with N > 0, got {x_flat.shape}')
  if filter_bias < 0:
    raise ValueError(f'filter_bias must be >= 0, got {filter_bias}')
  n, d = x_flat.shape
  mean = np.zeros(d, np.float64)
  for sl in image_chunks(n):
    mean += x_flat[sl].sum(axis=0, dtype=np.float64)
  mean /= n
  cov = np.zeros((d, d), np.float64)
  for sl in image_chunks(n):
    xc = x_flat[sl].astype(np.float64) - mean
    cov += xc.T @ xc
  cov /= n
  eigs, eigv = np.linalg.eigh(cov)
  eigs = np.maximum(eigs, 0.0)  # Round-off can make null directions negative.
  denom = eigs + filter_bias
  floor = max(float(eigs.max()), 1e-300) * d * np.finfo(np.float64).eps
  if np.any(denom <= floor):
    raise ValueError(
        'the covariance is singular and filter_bias is too small to whiten it '
        f'(smallest eigenvalue + filter_bias = {denom.min():.3g}); use '
        'filter_bias > 0')
  whitening = (eigv * (1.0 / np.sqrt(denom))) @ eigv.T
  whitening = (whitening + whitening.T) / 2  # Exactly symmetric.
  return ZCA(mean=mean.astype(np.float32), whitening=whitening.astype(np.float32))


def apply_zca(images: np.ndarray, zca: ZCA) -> np.ndarray:
  """Whitens images (N, ...) with prod(...) == D; float32 of the same shape."""
  images = np.asarray(images)
  n = images.shape[0]
  flat = images.reshape(n, -1)
  d = zca.mean.shape[0]
  if flat.shape[1] != d:
    raise ValueError(f'images have {flat.shape[1]} features per example, the '
                     f'ZCA was fitted on {d}')
  mean = zca.mean.astype(np.float32)
  w = zca.whitening.astype(np.float32)
  out = np.empty(flat.shape, np.float32)
  for sl in image_chunks(n):
    np.matmul(flat[sl].astype(np.float32) - mean, w, out=out[sl])
  return out.reshape(images.shape)


# ----------------------------------------------------------------------------
# GCN + ZCA with an on-disk cache of the fitted ZCA
# ----------------------------------------------------------------------------

_CACHE_KEY_RE = re.compile(r'^[A-Za-z0-9_.\-]+$')


def _fingerprint(images: np.ndarray) -> str:
  """Hash of the exact training data, so a cache fitted on other data is not reused."""
  h = hashlib.blake2b(digest_size=16)
  h.update(repr((images.dtype.str, images.shape)).encode())
  h.update(np.ascontiguousarray(images).data)
  return h.hexdigest()


def zca_cache_path(cache_dir: str | os.PathLike[str], cache_key: str,
                   scale: float, filter_bias: float, dim: int) -> str:
  """The cache file for one (key, scale, filter_bias, D); parameters are in the name."""
  if not _CACHE_KEY_RE.match(cache_key):
    raise ValueError(
        f'cache_key must match {_CACHE_KEY_RE.pattern}, got {cache_key!r}')
  return os.path.join(
      os.fspath(cache_dir),
      f'zca_{cache_key}_s{float(scale):g}_b{float(filter_bias):g}_D{dim}.npz')


def _load_zca_cache(path: str, dim: int, fingerprint: str) -> ZCA | None:
  """Returns the cached ZCA, or None (with a warning) if unusable."""
  cached = array_cache.read(
      path, {'mean': (dim,), 'whitening': (dim, dim), 'train_fingerprint': ()},
      what='ZCA cache')
  if cached is None:
    return None
  cached_fp = str(cached['train_fingerprint'])
  if cached_fp != fingerprint:
    logging.warning('ZCA cache %s was fitted on different training data '
                    '(fingerprint %s, now %s); refitting and overwriting it.',
                    path, cached_fp, fingerprint)
    return None
  return ZCA(mean=cached['mean'].astype(np.float32),
             whitening=cached['whitening'].astype(np.float32))


def _save_zca_cache(path: str, zca: ZCA, fingerprint: str) -> None:
  array_cache.write(path, {'mean': zca.mean, 'whitening': zca.whitening,
                           'train_fingerprint': np.array(fingerprint)})


def fit_gcn_zca(
    train_uint8: np.ndarray,
    *,
    cache_dir: str | os.PathLike[str] | None,
    cache_key: str,
    scale: float = 55.0,
    filter_bias: float = 0.1,
) -> ZCA:
  """The ZCA fitted on the GCN'd training split (cached on disk, see :func:`gcn_zca`)."""
  train_uint8 = np.asarray(train_uint8)
  dim = int(np.prod(train_uint8.shape[1:]))
  path = fingerprint = None
  if cache_dir is not None:
    path = zca_cache_path(cache_dir, cache_key, scale, filter_bias, dim)
    fingerprint = _fingerprint(train_uint8)
    zca = _load_zca_cache(path, dim, fingerprint)
    if zca is not None:
      logging.info('Loaded ZCA (D=%d) from cache %s', dim, path)
      return zca
  train = global_contrast_normalize(train_uint8, scale=scale)
  logging.info('Fitting ZCA (D=%d, filter_bias=%g) on %d GCN\'d training '
               'images', dim, filter_bias, train.shape[0])
  zca = fit_zca(train.reshape(train.shape[0], -1), filter_bias=filter_bias)
  if path is not None:
    _save_zca_cache(path, zca, fingerprint)
    logging.info('Wrote ZCA cache %s', path)
  return zca


def gcn_zca(
    train_uint8: np.ndarray,
    test_uint8: np.ndarray,
    *,
    cache_dir: str | os.PathLike[str] | None,
    cache_key: str,
    scale: float = 55.0,
    filter_bias: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
  """GCN both splits, fit ZCA on the GCN'd train split only, whiten both.

  The fitted ZCA is cached as ``cache_dir/zca_{key}_s{scale}_b{bias}_D{D}.npz``
  (see :func:`zca_cache_path`) because fitting takes tens of seconds on CIFAR;
  the file also stores a hash of the training images, and a cache fitted on
  different data, or an unreadable one, is refitted with a warning. Pass
  ``cache_dir=None`` to disable caching.

  Returns:
    (train, test) float32 arrays of the input shapes.
  """
  train_uint8 = np.asarray(train_uint8)
  test_uint8 = np.asarray(test_uint8)
  if train_uint8.shape[1:] != test_uint8.shape[1:]:
    raise ValueError(f'train images {train_uint8.shape[1:]} and test images '
                     f'{test_uint8.shape[1:]} differ in shape')
  zca = fit_gcn_zca(train_uint8, cache_dir=cache_dir, cache_key=cache_key,
                    scale=scale, filter_bias=filter_bias)
  return tuple(apply_zca(global_contrast_normalize(x, scale=scale), zca)
               for x in (train_uint8, test_uint8))
