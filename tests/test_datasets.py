"""Tests for nin_jax.data.datasets: TFDS (mocked and missing), IDX parsing, real Fashion-MNIST."""

import gzip
import os

import numpy as np
import pytest

from nin_jax.data import datasets
from nin_jax.data.datasets import DATASETS, DatasetError, load_arrays

FASHION_DIR = '/usr/share/datasets/fashion-mnist'


# ----------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------


def test_registry_facts():
  assert set(DATASETS) == {'cifar10', 'cifar100', 'svhn_cropped', 'mnist',
                           'fashion_mnist', 'imagenet2012'}
  assert DATASETS['imagenet2012'].num_examples == {'train': 1281167, 'test': 50000}
  assert DATASETS['cifar10'].num_examples == {'train': 50000, 'test': 10000}
  assert DATASETS['cifar100'].num_classes == 100
  assert DATASETS['svhn_cropped'].num_examples == {'train': 73257,
                                                   'test': 26032, 'extra': 531131}
  assert DATASETS['mnist'].image_shape == (28, 28, 1)
  assert DATASETS['fashion_mnist'].num_examples == {'train': 60000,
                                                    'test': 10000}
  for info in DATASETS.values():
    assert set(info.splits) == set(info.num_examples) >= {'train', 'test'}
  with pytest.raises(Exception):  # frozen
    DATASETS['cifar10'].num_classes = 3


# ----------------------------------------------------------------------------
# TFDS
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(set(DATASETS) - set(datasets.STREAMED)))
def test_tfds_mock_loads_every_dataset(name, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  info = DATASETS[name]
  with tfds.testing.mock_data(num_examples=13):
    for split in ('train', 'test'):
      images, labels = load_arrays(name, split, source='tfds',
                                   data_dir=str(tmp_path))
      assert images.shape == (13,) + info.image_shape
      assert images.dtype == np.uint8
      assert labels.shape == (13,)
      assert labels.dtype == np.int32
      assert labels.min() >= 0 and labels.max() < info.num_classes


def test_tfds_mock_more_examples_than_one_chunk(monkeypatch, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(datasets, '_TFDS_CHUNK', 4)
  with tfds.testing.mock_data(num_examples=10):
    images, labels = load_arrays('mnist', 'train', data_dir=str(tmp_path))
  assert images.shape == (10, 28, 28, 1) and labels.shape == (10,)


def test_tfds_missing_dataset_names_the_fix(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  empty = tmp_path / 'empty_tfds'
  empty.mkdir()
  with pytest.raises(DatasetError) as e:
    load_arrays('cifar10', 'train', source='tfds', data_dir=str(empty))
  msg = str(e.value)
  assert 'tfds build cifar10' in msg
  assert str(empty) in msg
  assert '--config.dataset.data_dir' in msg
  # The underlying tfds error is chained for debugging.
  assert isinstance(e.value.__cause__, AssertionError)


# ----------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim])
  header += np.asarray(array.shape, '>u4').tobytes()
  return header + array.tobytes()


def _write_idx_set(directory, images, labels, *, split='train', gz=True):
  prefix = {'train': 'train', 'test': 't10k'}[split]
  suffix = '.gz' if gz else ''
  directory.mkdir(parents=True, exist_ok=True)
  for stem, arr in ((f'{prefix}-images-idx3-ubyte', images),
                    (f'{prefix}-labels-idx1-ubyte', labels)):
    data = _idx_bytes(arr)
    path = directory / (stem + suffix)
    if gz:
      with gzip.open(path, 'wb') as f:
        f.write(data)
    else:
      path.write_bytes(data)


def _small_set(n=5, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  images[0, 0, 0], images[0, 27, 27] = 0, 255  # Both extremes present.
  labels = (np.arange(n) * 3 % 10).astype(np.uint8)
  return images, labels


@pytest.mark.parametrize('gz', [True, False])
@pytest.mark.parametrize('split', ['train', 'test'])
def test_idx_roundtrip_exact(tmp_path, gz, split):
  images, labels = _small_set()
  _write_idx_set(tmp_path, images, labels, split=split, gz=gz)
  got_x, got_y = load_arrays('fashion_mnist', split, source='idx',
                             idx_dir=str(tmp_path))
  assert got_x.dtype == np.uint8 and got_x.shape == (5, 28, 28, 1)
  assert got_y.dtype == np.int32
  np.testing.assert_array_equal(got_x[..., 0], images)
  np.testing.assert_array_equal(got_y, labels.astype(np.int32))
  # mnist reads the same format from an explicit directory.
  mx, my = load_arrays('mnist', split, source='idx', idx_dir=str(tmp_path))
  np.testing.assert_array_equal(mx, got_x)
  np.testing.assert_array_equal(my, got_y)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
  images, labels = _small_set()
  _write_idx_set(tmp_path, images, labels, gz=True)
  for stem in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'):
    os.rename(tmp_path / (stem + '.gz'), tmp_path / stem)
  got_x, _ = load_arrays('fashion_mnist', 'train', source='idx',
                         idx_dir=str(tmp_path))
  np.testing.assert_array_equal(got_x[..., 0], images)


def test_idx_truncated_plain_file_names_file(tmp_path):
  images, labels = _small_set()
  _write_idx_set(tmp_path, images, labels, gz=False)
  path = tmp_path / 'train-images-idx3-ubyte'
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(DatasetError, match='truncated') as e:
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))
  assert 'train-images-idx3-ubyte' in str(e.value)


def test_idx_truncated_gzip_names_file(tmp_path):
  images, labels = _small_set()
  _write_idx_set(tmp_path, images, labels, gz=True)
  path = tmp_path / 'train-labels-idx1-ubyte.gz'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(DatasetError) as e:
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))
  assert 'train-labels-idx1-ubyte.gz' in str(e.value)


def test_idx_bad_header_and_mismatched_counts(tmp_path):
  images, labels = _small_set()
  _write_idx_set(tmp_path, images, labels, gz=False)
  path = tmp_path / 'train-images-idx3-ubyte'
  good = path.read_bytes()
  path.write_bytes(bytes([0, 0, 0x0D]) + good[3:])  # float dtype code
  with pytest.raises(DatasetError, match='dtype code'):
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))
  path.write_bytes(b'\x12\x34' + good[2:])  # bad magic
  with pytest.raises(DatasetError, match='not an IDX file'):
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))
  path.write_bytes(good + b'\x00')  # trailing garbage
  with pytest.raises(DatasetError, match='corrupt'):
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))
  path.write_bytes(good)
  (tmp_path / 'train-labels-idx1-ubyte').write_bytes(_idx_bytes(labels[:4]))
  with pytest.raises(DatasetError, match='5 images but .* 4 labels'):
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))


def test_idx_labels_out_of_range(tmp_path):
  images, labels = _small_set()
  labels[2] = 10
  _write_idx_set(tmp_path, images, labels, gz=False)
  with pytest.raises(DatasetError, match=r'labels outside \[0, 10\)'):
    load_arrays('fashion_mnist', 'train', source='idx', idx_dir=str(tmp_path))


def test_idx_missing_dir_names_debian_package(tmp_path):
  with pytest.raises(DatasetError) as e:
    load_arrays('fashion_mnist', 'train', source='idx',
                idx_dir=str(tmp_path / 'nope'))
  assert 'dataset-fashion-mnist' in str(e.value)
  assert '--config.dataset.idx_dir' in str(e.value)


def test_idx_missing_file_names_fix(tmp_path):
  images, labels = _small_set()
  _write_idx_set(tmp_path, images, labels, split='train')
  with pytest.raises(DatasetError) as e:  # only train files exist
    load_arrays('fashion_mnist', 'test', source='idx', idx_dir=str(tmp_path))
  assert 't10k-images-idx3-ubyte' in str(e.value)
  assert 'dataset-fashion-mnist' in str(e.value)


def test_idx_mnist_has_no_default_dir():
  # The Debian directory holds Fashion-MNIST; 'mnist' must never read it.
  with pytest.raises(DatasetError, match='--config.dataset.idx_dir'):
    load_arrays('mnist', 'train', source='idx')


def test_idx_rejects_non_idx_datasets(tmp_path):
  with pytest.raises(DatasetError, match="source='tfds'"):
    load_arrays('cifar10', 'train', source='idx', idx_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason=f'{FASHION_DIR} absent (apt-get install '
                    'dataset-fashion-mnist)')
def test_real_fashion_mnist():
  info = DATASETS['fashion_mnist']
  for split, per_class in (('train', 6000), ('test', 1000)):
    images, labels = load_arrays('fashion_mnist', split, source='idx')
    assert images.shape == (info.num_examples[split], 28, 28, 1)
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels, minlength=10),
                                  np.full(10, per_class))
    assert images.min() == 0 and images.max() == 255
    # Fashion-MNIST's known pixel mean (0.286 train / 0.287 test in [0, 1]):
    # this is Fashion-MNIST, not MNIST (0.131).
    assert 0.28 < images.mean() / 255 < 0.29


# ----------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------


def test_unknown_name_lists_choices():
  with pytest.raises(DatasetError) as e:
    load_arrays('imagenet', 'train')
  for name in DATASETS:
    assert name in str(e.value)


def test_unknown_source_lists_choices():
  with pytest.raises(DatasetError) as e:
    load_arrays('mnist', 'train', source='hdf5')
  assert 'tfds' in str(e.value) and 'idx' in str(e.value)


def test_unknown_split_lists_choices():
  with pytest.raises(DatasetError) as e:
    load_arrays('cifar10', 'validation')
  assert "'test'" in str(e.value) and "'train'" in str(e.value)


def test_dataset_error_is_value_error():
  assert issubclass(DatasetError, ValueError)


def test_imagenet_is_streamed_not_loaded_whole():
  with pytest.raises(DatasetError, match='streamed'):
    load_arrays('imagenet2012', 'train')
