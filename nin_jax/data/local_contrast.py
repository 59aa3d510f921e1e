"""Local contrast normalisation, as the NIN paper's SVHN input (pylearn2's LeCunLCN).

SVHN: GCN (scale 1) then LCN with a 7×7 Gaussian window (sigma 2), threshold
1e-4, zero padding without border renormalisation (:func:`gcn_lcn`). numpy
only; returns float32.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

from nin_jax.data.preprocess import image_chunks, global_contrast_normalize


def _gaussian_kernel_1d(kernel_size: int, sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian; its outer product is pylearn2's gaussian_filter."""
  mid = kernel_size // 2
  t = np.arange(kernel_size, dtype=np.float64) - mid
  k = np.exp(-t**2 / (2.0 * sigma**2))
  return k / k.sum()


def _smooth(x: np.ndarray, k: np.ndarray) -> np.ndarray:
  """Zero-padded 'same' separable convolution over axes 1, 2 of (N, H, W, C)."""
  y = scipy.ndimage.correlate1d(x, k, axis=1, mode='constant', cval=0.0)
  return scipy.ndimage.correlate1d(y, k, axis=2, mode='constant', cval=0.0)


def local_contrast_normalize(
    images: np.ndarray,
    kernel_size: int = 7,
    sigma: float = 2.0,
    eps: float = 1e-4,
    *,
    pylearn2_compat: bool = False,
) -> np.ndarray:
  """Local contrast normalisation (Jarrett et al. 2009), per image and channel.

  With G the normalised ``kernel_size`` x ``kernel_size`` Gaussian window
  (std ``sigma``; pylearn2's ``gaussian_filter``: 7 and 2.0) and ``*``
  correlation, for each image and channel x:

    mu    = G * x                       (local Gaussian-weighted mean)
    v     = x - mu
    s     = sqrt(G * v**2)              (local Gaussian-weighted std)
    y     = v / max(max(s, mean(s)), eps),   mean(s) over the image's pixels.

  Near the border the window is cut off by the image edge, and by default the
  weights are renormalised over the part inside the image (i.e. ``G * .`` is
  divided by ``G * 1`` with zero padding), so a constant image maps to exactly
  zero. ``pylearn2_compat=True`` instead reproduces pylearn2's ``lecun_lcn``
  (the code behind the Maxout/NIN SVHN numbers) exactly: zero padding without
  renormalisation, and ``s = sqrt(G * x**2)`` of the *uncentred* input.

  The result is invariant to a positive rescaling of the input except where
  eps binds. Images (N, H, W, C), any real dtype; returns float32.
  """
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f'kernel_size must be odd and positive, got {kernel_size}')
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'expected (N, H, W, C) images, got shape {images.shape}')
  k = _gaussian_kernel_1d(kernel_size, sigma)
  n, h, w, _ = images.shape
  if pylearn2_compat:
    mass = None
  else:
    mass = _smooth(np.ones((1, h, w, 1), np.float64), k)  # G * 1
  out = np.empty(images.shape, np.float32)
  for sl in image_chunks(n, 2000):
    x = images[sl].astype(np.float64)
    mu = _smooth(x, k)
    if mass is not None:
      mu /= mass
    v = x - mu
    if pylearn2_compat:
      s = np.sqrt(_smooth(np.square(x), k))
    else:
      s = np.sqrt(np.maximum(_smooth(np.square(v), k) / mass, 0.0))
    per_image = s.mean(axis=(1, 2), keepdims=True)
    divisor = np.maximum(np.maximum(s, per_image), eps)
    out[sl] = v / divisor
  return out


def gcn_lcn(images: np.ndarray) -> np.ndarray:
  """SVHN as the Maxout and NIN papers preprocessed it (pylearn2's svhn_preprocessing.py).

  GlobalContrastNormalizationPyTables (scale 1: each image centred and divided
  by its L2 norm) then LeCunLCN (7×7 Gaussian, σ 2, threshold 1e-4, zero
  padding without border renormalisation, uncentred variance). Per image, so
  nothing is fitted. Returns float32.
  """
  return local_contrast_normalize(global_contrast_normalize(images, scale=1.0),
                                  kernel_size=7, sigma=2.0, eps=1e-4,
                                  pylearn2_compat=True)
