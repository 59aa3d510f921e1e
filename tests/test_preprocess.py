"""Tests for nin_jax.data.preprocess (standardisation, GCN, ZCA + cache) and nin_jax.data.local_contrast (LCN)."""

import os

from absl import logging
import numpy as np
import pytest

from nin_jax.data import local_contrast
from nin_jax.data import preprocess
from nin_jax.data.local_contrast import local_contrast_normalize
from nin_jax.data.preprocess import (ZCA, apply_zca, channel_stats, fit_zca,
                                gcn_zca, global_contrast_normalize, standardize)


def _rand_uint8(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=shape,
                                              dtype=np.uint8)


# ----------------------------------------------------------------------------
# Standardisation
# ----------------------------------------------------------------------------


def test_channel_stats_match_float64_reference(monkeypatch):
  monkeypatch.setattr(preprocess, 'CHUNK', 7)  # several chunks
  x = _rand_uint8((50, 4, 5, 3))
  x[..., 1] //= 4  # channels differ
  mean, std = channel_stats(x)
  ref = x.astype(np.float64) / 255
  np.testing.assert_allclose(mean, ref.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, ref.std(axis=(0, 1, 2)), rtol=1e-5)
  assert mean.shape == std.shape == (3,)
  assert mean[1] < mean[0] / 2  # really per channel


def test_standardize_zero_mean_unit_std():
  x = _rand_uint8((40, 8, 8, 3), seed=1)
  x[..., 2] = x[..., 2] // 3 + 100
  mean, std = channel_stats(x)
  y = standardize(x, mean, std)
  assert y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1, atol=1e-4)
  np.testing.assert_allclose(
      y, (x / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)


def test_standardize_rejects_float_input():
  with pytest.raises(TypeError, match='uint8'):
    standardize(np.zeros((1, 2, 2, 1), np.float32), [0.], [1.])
  with pytest.raises(TypeError, match='uint8'):
    channel_stats(np.zeros((1, 2, 2, 1), np.float32))


# ----------------------------------------------------------------------------
# GCN
# ----------------------------------------------------------------------------


def test_gcn_zero_mean_norm_scale(monkeypatch):
  monkeypatch.setattr(preprocess, 'CHUNK', 8)
  x = _rand_uint8((20, 6, 6, 3), seed=2)
  y = global_contrast_normalize(x, scale=55.0)
  assert y.dtype == np.float32 and y.shape == x.shape
  flat = y.reshape(20, -1).astype(np.float64)
  np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 55.0, rtol=1e-5)


def test_gcn_scale_invariant_and_constant_image_is_zero():
  x = _rand_uint8((3, 4, 4, 3), seed=3)
  x[1] = 77  # constant image
  y = global_contrast_normalize(x)
  np.testing.assert_allclose(global_contrast_normalize(x / 255.0), y,
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(y))
  np.testing.assert_array_equal(y[1], 0)


# ----------------------------------------------------------------------------
# ZCA
# ----------------------------------------------------------------------------


def _correlated(n=2000, d=48, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(d, d))
  cov = a @ a.T / d + 0.05 * np.eye(d)  # dense, well away from diagonal
  chol = np.linalg.cholesky(cov)
  return rng.normal(size=(n, d)) @ chol.T + 3.0, cov


def test_zca_whitens_to_identity():
  x, cov = _correlated()
  assert np.abs(cov - np.diag(np.diag(cov))).max() > 0.3  # truly correlated
  zca = fit_zca(x, filter_bias=1e-5)
  assert zca.mean.dtype == zca.whitening.dtype == np.float32
  y = apply_zca(x, zca).astype(np.float64)
  np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-3)
  c = y.T @ y / len(y)
  assert np.abs(c - np.eye(48)).max() < 0.05
  # Exactly the pylearn2 formula with no bias: W = C^{-1/2}.
  xc = x - x.mean(axis=0)
  e, v = np.linalg.eigh(xc.T @ xc / len(x))
  np.testing.assert_allclose(zca.whitening, (v / np.sqrt(e)) @ v.T,
                             rtol=2e-3, atol=2e-3)


def test_zca_exact_pylearn2_formula():
  # Small N so that X^T X / N and / (N - 1) differ far beyond float32 round-off.
  x = np.random.default_rng(11).normal(size=(40, 6)) @ np.triu(np.ones((6, 6)))
  zca = fit_zca(x, filter_bias=0.1)
  xc = x - x.mean(axis=0)
  e, v = np.linalg.eigh(xc.T @ xc / 40)
  ref = (v / np.sqrt(e + 0.1)) @ v.T
  np.testing.assert_allclose(zca.mean, x.mean(axis=0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(zca.whitening, ref, rtol=1e-5, atol=1e-6)


def test_zca_filter_bias_on_gcn_data_shrinks_and_is_symmetric():
  x = _rand_uint8((600, 4, 4, 3), seed=4).astype(np.float64)
  x += np.linspace(0, 60, 48).reshape(4, 4, 3)  # correlated structure
  g = global_contrast_normalize(x).reshape(600, -1)
  zca = fit_zca(g, filter_bias=0.1)  # GCN'd data is rank deficient: needs bias
  np.testing.assert_array_equal(zca.whitening, zca.whitening.T)
  y = apply_zca(g, zca).astype(np.float64)
  eig = np.linalg.eigvalsh(y.T @ y / len(y))
  assert eig.max() < 1.0
  assert eig.max() > 0.5  # still substantially whitened, not collapsed


def test_zca_singular_without_bias_raises():
  g = global_contrast_normalize(_rand_uint8((100, 2, 2, 3), seed=5))
  with pytest.raises(ValueError, match='filter_bias'):
    fit_zca(g.reshape(100, -1), filter_bias=0.0)


def test_apply_zca_keeps_shape_and_chunks(monkeypatch):
  monkeypatch.setattr(preprocess, 'CHUNK', 3)
  x = np.random.default_rng(6).normal(size=(10, 2, 2, 3))
  zca = fit_zca(x.reshape(10, -1), filter_bias=0.1)
  y = apply_zca(x, zca)
  assert y.shape == x.shape and y.dtype == np.float32
  ref = (x.reshape(10, -1) - zca.mean) @ zca.whitening
  np.testing.assert_allclose(y.reshape(10, -1), ref, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='fitted on 12'):
    apply_zca(np.zeros((2, 5)), zca)


# ----------------------------------------------------------------------------
# gcn_zca cache
# ----------------------------------------------------------------------------


def _cifar_like(seed=0):
  train = _rand_uint8((300, 4, 4, 3), seed=seed)
  test = _rand_uint8((50, 4, 4, 3), seed=seed + 100)
  return train, test


def _cache_files(d):
  return sorted(p for p in os.listdir(d) if p.endswith('.npz'))


def test_gcn_zca_writes_then_loads_cache(tmp_path, monkeypatch):
  train, test = _cifar_like()
  tr1, te1 = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  assert _cache_files(tmp_path) == ['zca_toy_s55_b0.1_D48.npz']
  assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
  assert tr1.dtype == te1.dtype == np.float32
  assert tr1.shape == train.shape and te1.shape == test.shape

  def boom(*a, **k):
    raise AssertionError('fit_zca must not be called when the cache is valid')

  monkeypatch.setattr(preprocess, 'fit_zca', boom)
  infos = []
  monkeypatch.setattr(logging, 'info', lambda msg, *a: infos.append(msg % a))
  tr2, te2 = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  np.testing.assert_array_equal(tr1, tr2)
  np.testing.assert_array_equal(te1, te2)
  assert any('Loaded ZCA' in m for m in infos)


def test_gcn_zca_whitens_train_with_train_fit_only(tmp_path):
  train, test = _cifar_like(seed=1)
  tr, te = gcn_zca(train, test, cache_dir=None, cache_key='x')
  g_tr = global_contrast_normalize(train).reshape(300, -1)
  zca = fit_zca(g_tr, filter_bias=0.1)
  ref = apply_zca(global_contrast_normalize(test), zca)
  np.testing.assert_allclose(te, ref, rtol=1e-5, atol=1e-5)
  assert not os.listdir(tmp_path)  # cache_dir=None writes nothing


def test_gcn_zca_corrupt_cache_refits_with_warning(tmp_path, monkeypatch):
  train, test = _cifar_like()
  tr1, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  path = tmp_path / _cache_files(tmp_path)[0]
  path.write_bytes(b'this is not a zip file')
  warnings = []
  monkeypatch.setattr(logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  tr2, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  np.testing.assert_allclose(tr1, tr2, rtol=1e-6, atol=1e-6)
  assert any('unreadable' in w and str(path) in w for w in warnings)
  # The refit repaired the cache: the next call loads it.
  monkeypatch.setattr(preprocess, 'fit_zca', None)
  tr3, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  np.testing.assert_array_equal(tr2, tr3)


def test_gcn_zca_wrong_shape_cache_refits(tmp_path, monkeypatch):
  train, test = _cifar_like()
  path = preprocess.zca_cache_path(tmp_path, 'toy', 55.0, 0.1, 48)
  np.savez(path, mean=np.zeros(3), whitening=np.eye(3),
           train_fingerprint=np.array('x'))
  warnings = []
  monkeypatch.setattr(logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  tr, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  assert np.all(np.isfinite(tr))
  assert any('bad contents' in w for w in warnings)


def test_gcn_zca_cache_from_other_train_data_is_not_reused(tmp_path,
                                                           monkeypatch):
  train, test = _cifar_like(seed=0)
  other, _ = _cifar_like(seed=7)
  gcn_zca(other, test, cache_dir=tmp_path, cache_key='toy')
  warnings = []
  monkeypatch.setattr(logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  tr, te = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  fresh_tr, fresh_te = gcn_zca(train, test, cache_dir=None, cache_key='toy')
  np.testing.assert_array_equal(tr, fresh_tr)
  np.testing.assert_array_equal(te, fresh_te)
  assert any('different training data' in w for w in warnings)


def test_gcn_zca_parameters_pick_distinct_cache_files(tmp_path):
  train, test = _cifar_like()
  a, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy')
  b, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy',
                 filter_bias=0.01)
  c, _ = gcn_zca(train, test, cache_dir=tmp_path, cache_key='toy', scale=1.0)
  gcn_zca(train, test, cache_dir=tmp_path, cache_key='other')
  assert _cache_files(tmp_path) == [
      'zca_other_s55_b0.1_D48.npz', 'zca_toy_s1_b0.1_D48.npz',
      'zca_toy_s55_b0.01_D48.npz', 'zca_toy_s55_b0.1_D48.npz']
  assert not np.allclose(a, b)
  assert not np.allclose(a, c)


def test_gcn_zca_rejects_path_like_cache_key(tmp_path):
  train, test = _cifar_like()
  with pytest.raises(ValueError, match='cache_key'):
    gcn_zca(train, test, cache_dir=tmp_path, cache_key='../evil')


# ----------------------------------------------------------------------------
# LCN
# ----------------------------------------------------------------------------


def _pylearn2_gaussian(kernel_size, sigma=2.0):
  """pylearn2.datasets.preprocessing.gaussian_filter, written out independently."""
  mid = kernel_size // 2
  g = np.zeros((kernel_size, kernel_size))
  for i in range(kernel_size):
    for j in range(kernel_size):
      g[i, j] = np.exp(-((i - mid)**2 + (j - mid)**2) / (2 * sigma**2))
  return g / g.sum()


def _conv_same_zero(img, g):
  """Brute-force zero-padded 'same' 2-D correlation of an (H, W) image."""
  h, w = img.shape
  r = g.shape[0] // 2
  padded = np.zeros((h + 2 * r, w + 2 * r))
  padded[r:r + h, r:r + w] = img
  out = np.zeros((h, w))
  for i in range(h):
    for j in range(w):
      out[i, j] = (padded[i:i + 2 * r + 1, j:j + 2 * r + 1] * g).sum()
  return out


def _lcn_reference(img, kernel_size=7, sigma=2.0, eps=1e-4, compat=False):
  g = _pylearn2_gaussian(kernel_size, sigma)
  if compat:
    mu = _conv_same_zero(img, g)
    v = img - mu
    s = np.sqrt(_conv_same_zero(img**2, g))
  else:
    mass = _conv_same_zero(np.ones_like(img), g)
    v = img - _conv_same_zero(img, g) / mass
    s = np.sqrt(_conv_same_zero(v**2, g) / mass)
  return v / np.maximum(np.maximum(s, s.mean()), eps)


@pytest.mark.parametrize('compat', [False, True])
def test_lcn_matches_bruteforce_formula(compat):
  rng = np.random.default_rng(8)
  x = rng.uniform(0, 255, size=(2, 10, 9, 2))
  x[1, :, :5, 1] += 100  # an edge, so local stats vary
  y = local_contrast_normalize(x, pylearn2_compat=compat)
  assert y.dtype == np.float32 and y.shape == x.shape
  for n in range(2):
    for c in range(2):
      np.testing.assert_allclose(
          y[n, :, :, c], _lcn_reference(x[n, :, :, c], compat=compat),
          rtol=1e-5, atol=1e-5)


def test_lcn_constant_image_is_zero():
  x = np.full((2, 12, 12, 3), 123.0)
  np.testing.assert_allclose(local_contrast_normalize(x), 0, atol=1e-6)
  # pylearn2's zero padding leaves a border artefact, but the interior
  # (whose 7x7 window lies inside the image) is zero there too.
  y = local_contrast_normalize(x, pylearn2_compat=True)
  np.testing.assert_allclose(y[:, 3:-3, 3:-3], 0, atol=1e-6)
  assert np.abs(y[:, 0, 0]).min() > 0.1


def test_lcn_removes_local_mean_per_channel():
  rng = np.random.default_rng(9)
  x = rng.uniform(0, 1, size=(1, 32, 32, 3))
  x += np.linspace(0, 5, 32)[None, :, None, None]  # slow gradient
  x[..., 1] += 10.0  # per-channel offset
  y = local_contrast_normalize(x)
  g1 = local_contrast._gaussian_kernel_1d(7, 2.0)
  mass = local_contrast._smooth(np.ones((1, 32, 32, 1)), g1)
  local_mean_out = local_contrast._smooth(y.astype(np.float64), g1) / mass
  local_mean_in = local_contrast._smooth(x, g1) / mass
  # The input's local mean is large; the output's is small next to its
  # local fluctuations (rms ~1), in every channel.
  assert np.abs(local_mean_in).min() > 0.5
  for c in range(3):
    assert np.sqrt(np.mean(local_mean_out[..., c]**2)) < 0.2
    assert abs(y[..., c].mean()) < 0.05
    assert 0.5 < y[..., c].std() < 1.5


def test_lcn_is_scale_invariant():
  x = np.random.default_rng(10).uniform(0, 255, size=(2, 8, 8, 3))
  np.testing.assert_allclose(local_contrast_normalize(x),
                             local_contrast_normalize(x / 255.0),
                             rtol=1e-4, atol=1e-4)


def test_lcn_rejects_even_kernel():
  with pytest.raises(ValueError, match='odd'):
    local_contrast_normalize(np.zeros((1, 8, 8, 1)), kernel_size=6)


def test_zca_dataclass_fields():
  z = ZCA(mean=np.zeros(2, np.float32), whitening=np.eye(2, dtype=np.float32))
  assert [f for f in z.__dataclass_fields__] == ['mean', 'whitening']


def test_svhn_gcn_lcn_is_pylearn2s_pipeline():
  # svhn_preprocessing.py: GlobalContrastNormalization (scale 1, L2 norm over
  # the whole image) then LeCunLCN (7×7, σ 2, threshold 1e-4, zero padding, no
  # border renormalisation, uncentred variance), channel by channel.
  x = _rand_uint8((2, 10, 9, 3), seed=4)
  y = local_contrast.gcn_lcn(x)
  assert y.dtype == np.float32 and y.shape == x.shape
  for n in range(2):
    img = x[n].astype(np.float64)
    img -= img.mean()
    img /= np.sqrt(np.square(img).sum())
    for c in range(3):
      np.testing.assert_allclose(
          y[n, :, :, c], _lcn_reference(img[:, :, c], 7, 2.0, 1e-4, compat=True),
          rtol=1e-4, atol=1e-5)
