"""Where images come from: whole splits as numpy arrays.

This module knows nothing about JAX devices, models or batching; it returns
``(images uint8 (N, H, W, C), labels int32 (N,))`` for one split of one dataset,
read either from a prepared TFDS directory (``source='tfds'``) or from the
original IDX files of MNIST / Fashion-MNIST (``source='idx'``).

Every user-facing data problem raises :class:`DatasetError` with a message that
names the fix, because the typical failure (data not on this machine) happens on
a pod far away from whoever can fix it.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib

from absl import logging
import numpy as np

from nin_jax.runtime import tensorflow_loader

__all__ = ['DATASETS', 'DatasetError', 'DatasetInfo', 'load_arrays']


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset, so callers can size models before loading.

  Attributes:
    tfds_name: TFDS builder name.
    image_shape: (H, W, C) of one image.
    num_classes: number of label classes; labels are in [0, num_classes).
    splits: our split name ('train', 'test') -> TFDS split name.
    num_examples: our split name -> number of examples in the full split.
  """
  tfds_name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  splits: dict[str, str]
  num_examples: dict[str, int]


class DatasetError(ValueError):
  """A data problem the user must fix; the message says how."""


_TRAIN_TEST = {'train': 'train', 'test': 'test'}

DATASETS: dict[str, DatasetInfo] = {
    'cifar10': DatasetInfo(
        tfds_name='cifar10', image_shape=(32, 32, 3), num_classes=10,
        splits=dict(_TRAIN_TEST), num_examples={'train': 50000, 'test': 10000}),
    'cifar100': DatasetInfo(
        tfds_name='cifar100', image_shape=(32, 32, 3), num_classes=100,
        splits=dict(_TRAIN_TEST), num_examples={'train': 50000, 'test': 10000}),
    # 'extra': the 531,131 easier digits the paper trained on beside 'train'.
    'svhn_cropped': DatasetInfo(
        tfds_name='svhn_cropped', image_shape=(32, 32, 3), num_classes=10,
        splits={'train': 'train', 'test': 'test', 'extra': 'extra'},
        num_examples={'train': 73257, 'test': 26032, 'extra': 531131}),
    'mnist': DatasetInfo(
        tfds_name='mnist', image_shape=(28, 28, 1), num_classes=10,
        splits=dict(_TRAIN_TEST), num_examples={'train': 60000, 'test': 10000}),
    'fashion_mnist': DatasetInfo(
        tfds_name='fashion_mnist', image_shape=(28, 28, 1), num_classes=10,
        splits=dict(_TRAIN_TEST), num_examples={'train': 60000, 'test': 10000}),
    # Streamed by nin_jax.data.imagenet_input, never loaded whole; shape after the crop.
    'imagenet2012': DatasetInfo(
        tfds_name='imagenet2012', image_shape=(224, 224, 3), num_classes=1000,
        splits={'train': 'train', 'test': 'validation'},
        num_examples={'train': 1281167, 'test': 50000}),
}
STREAMED = ('imagenet2012',)

SOURCES = ('tfds', 'idx')

# Debian's `dataset-fashion-mnist` package installs the gzipped IDX files here.
DEFAULT_IDX_DIR = '/usr/share/datasets/fashion-mnist'
# Datasets stored in the IDX format, and the default directory of each. MNIST
# has no default: the Debian directory holds Fashion-MNIST, and silently
# training "mnist" on Fashion-MNIST would be far worse than an error.
_IDX_DEFAULT_DIRS: dict[str, str | None] = {
    'fashion_mnist': DEFAULT_IDX_DIR,
    'mnist': None,
}
_IDX_FILE_PREFIX = {'train': 'train', 'test': 't10k'}
_IDX_UBYTE = 0x08

# Examples per tf.data batch when materialising a TFDS split. We batch by hand
# instead of `tfds.load(batch_size=-1)`: when the split sizes are unknown (e.g.
# under `tfds.testing.mock_data`) tfds batches by `sys.maxsize`, which aborts
# the whole process in TF 2.21 (`std::length_error` from `vector::reserve`).
_TFDS_CHUNK = 10000


def _info(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise DatasetError(
        f'unknown dataset {name!r}; valid choices: {sorted(DATASETS)}')
  return DATASETS[name]


def _check_split(name: str, info: DatasetInfo, split: str) -> None:
  if split not in info.splits:
    raise DatasetError(
        f'unknown split {split!r} for dataset {name!r}; valid choices: '
        f'{sorted(info.splits)}')


def load_arrays(
    name: str,
    split: str,
    *,
    source: str = 'tfds',
    data_dir: str | None = None,
    idx_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split into memory.

  Args:
    name: a key of :data:`DATASETS`.
    split: 'train', 'test', or 'extra' (SVHN).
    source: 'tfds' (a prepared TFDS directory; never downloads) or 'idx'
      (original IDX files; only for 'mnist' and 'fashion_mnist').
    data_dir: TFDS data directory (None: TFDS's default).
    idx_dir: directory with the IDX files (None: the Debian
      dataset-fashion-mnist location, for 'fashion_mnist' only).

  Returns:
    (images uint8 (N, H, W, C), labels int32 (N,)), in the split's stored order.

  Raises:
    DatasetError: unknown name/split/source, data missing or corrupt.
  """
  info = _info(name)
  _check_split(name, info, split)
  if name in STREAMED:
    raise DatasetError(f'{name!r} is streamed (nin_jax.data.imagenet_input), not loaded whole')
  if source == 'tfds':
    images, labels = _load_tfds(name, info, split, data_dir)
  elif source == 'idx':
    images, labels = _load_idx(name, info, split, idx_dir)
  else:
    raise DatasetError(
        f'unknown source {source!r}; valid choices: {list(SOURCES)}')
  _validate(name, split, info, images, labels)
  logging.info('Loaded %s/%s from %s: images %s %s, labels %s', name, split,
               source, images.shape, images.dtype, labels.shape)
  return images, labels


def _validate(name: str, split: str, info: DatasetInfo, images: np.ndarray,
              labels: np.ndarray) -> None:
  """Checks the contract of load_arrays so bad data fails here, not in jit."""
  where = f'{name}/{split}'
  if images.dtype != np.uint8 or images.ndim != 4 or (
      tuple(images.shape[1:]) != info.image_shape):
    raise DatasetError(
        f'{where}: expected uint8 images of shape (N, {info.image_shape}), got '
        f'{images.dtype} {images.shape}; the stored data does not match '
        f'DATASETS[{name!r}] - re-prepare it')
  if labels.shape != (images.shape[0],):
    raise DatasetError(
        f'{where}: {images.shape[0]} images but labels of shape '
        f'{labels.shape}; re-prepare the data')
  if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
    raise DatasetError(
        f'{where}: labels outside [0, {info.num_classes}) (min '
        f'{labels.min()}, max {labels.max()}); re-prepare the data')


# ----------------------------------------------------------------------------
# TFDS
# ----------------------------------------------------------------------------


def _not_prepared(name: str, info: DatasetInfo, data_dir: str | None,
                  cause: BaseException) -> DatasetError:
  where = data_dir if data_dir is not None else (
      'the default TFDS dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)')
  dir_flag = data_dir if data_dir is not None else '<DIR>'
  return DatasetError(
      f'dataset {name!r} is not prepared in {where}. Run `tfds build '
      f'{info.tfds_name} --data_dir={dir_flag}` on a machine with internet, '
      f'or point --config.dataset.data_dir at a directory holding it '
      f'(TFDS said: {type(cause).__name__}: {cause})')


def _load_tfds(name: str, info: DatasetInfo, split: str,
               data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  tf = tensorflow_loader.tensorflow()
  tfds = tensorflow_loader.tfds()

  # What tfds 4.9.10 raises when the data is absent and download=False:
  # AssertionError("Dataset X: could not find data in DIR ...") from
  # DatasetBuilder.as_dataset. The others cover an unknown builder and a
  # partially deleted directory (at load time or while reading records).
  missing = (AssertionError, FileNotFoundError, tf.errors.NotFoundError,
             tfds.core.registered.DatasetNotFoundError)
  try:
    ds = tfds.load(info.tfds_name, split=info.splits[split], data_dir=data_dir,
                   as_supervised=True, download=False, shuffle_files=False)
    images, labels = [], []
    for x, y in tfds.as_numpy(ds.batch(_TFDS_CHUNK)):
      images.append(x)
      labels.append(y)
  except missing as e:
    raise _not_prepared(name, info, data_dir, e) from e
  except tf.errors.DataLossError as e:
    raise DatasetError(
        f'dataset {name!r} in {data_dir or "the default TFDS dir"} is corrupt '
        f'({e}); delete it and re-run `tfds build {info.tfds_name}`') from e
  if not images:
    shape = (0,) + info.image_shape
    return np.zeros(shape, np.uint8), np.zeros((0,), np.int32)
  images_np = np.concatenate(images) if len(images) > 1 else images[0]
  labels_np = np.concatenate(labels) if len(labels) > 1 else labels[0]
  return images_np, labels_np.astype(np.int32)


# ----------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST original files)
# ----------------------------------------------------------------------------


def _idx_fix(name: str) -> str:
  if name == 'fashion_mnist':
    return ('install the files with `sudo apt-get install '
            'dataset-fashion-mnist` (Debian) or set --config.dataset.idx_dir to '
            'a directory holding them')
  return ('set --config.dataset.idx_dir to a directory holding the MNIST IDX '
          'files (the Debian package dataset-fashion-mnist provides '
          'Fashion-MNIST only)')


def _find_idx_file(directory: str, stem: str, name: str) -> str:
  """Returns the path of `stem` or `stem.gz` in directory (gz preferred)."""
  for candidate in (stem + '.gz', stem):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  raise DatasetError(
      f'IDX file {stem}[.gz] not found in {directory!r} for dataset {name!r}; '
      + _idx_fix(name))


def _read_bytes(path: str) -> bytes:
  """Reads a plain or gzipped file (detected by the gzip magic, not the name)."""
  try:
    with open(path, 'rb') as f:
      head = f.read(2)
    opener = gzip.open if head == b'\x1f\x8b' else open
    with opener(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError.
    raise DatasetError(
        f'cannot read IDX file {path!r} ({type(e).__name__}: {e}); the file is '
        'truncated or corrupt - reinstall or re-download it') from e


def read_idx(path: str, expected_ndim: int) -> np.ndarray:
  """Parses one IDX file of unsigned bytes into an array of its stated dims.

  Format: two zero bytes, dtype code (0x08 = ubyte), number of dims, then that
  many big-endian uint32 sizes, then the data in C order.
  """
  data = _read_bytes(path)
  if len(data) < 4:
    raise DatasetError(f'IDX file {path!r} is truncated (only {len(data)} '
                       'bytes); reinstall or re-download it')
  zero0, zero1, dtype_code, ndim = data[0], data[1], data[2], data[3]
  if zero0 != 0 or zero1 != 0:
    raise DatasetError(f'{path!r} is not an IDX file (bad magic '
                       f'{data[:4].hex()}); reinstall or re-download it')
  if dtype_code != _IDX_UBYTE:
    raise DatasetError(f'IDX file {path!r} has dtype code {dtype_code:#04x}, '
                       f'expected {_IDX_UBYTE:#04x} (unsigned byte)')
  if ndim != expected_ndim:
    raise DatasetError(f'IDX file {path!r} has {ndim} dims, expected '
                       f'{expected_ndim}; wrong file?')
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise DatasetError(f'IDX file {path!r} is truncated inside its header; '
                       'reinstall or re-download it')
  dims = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, offset=4))
  expected = int(np.prod(dims, dtype=np.int64))
  actual = len(data) - header_len
  if actual != expected:
    raise DatasetError(
        f'IDX file {path!r} is truncated or corrupt: header says dims {dims} '
        f'({expected} bytes of data) but it holds {actual}; reinstall or '
        're-download it')
  return np.frombuffer(data, np.uint8, expected, offset=header_len).reshape(dims)


def _load_idx(name: str, info: DatasetInfo, split: str,
              idx_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  if name not in _IDX_DEFAULT_DIRS:
    raise DatasetError(
        f"source='idx' supports only {sorted(_IDX_DEFAULT_DIRS)}, not "
        f"{name!r}; use source='tfds' for it")
  directory = idx_dir if idx_dir is not None else _IDX_DEFAULT_DIRS[name]
  if directory is None:
    raise DatasetError(f"source='idx' for {name!r} has no default directory; "
                       + _idx_fix(name))
  if not os.path.isdir(directory):
    raise DatasetError(f'IDX directory {directory!r} does not exist; '
                       + _idx_fix(name))
  prefix = _IDX_FILE_PREFIX[split]
  images_path = _find_idx_file(directory, f'{prefix}-images-idx3-ubyte', name)
  labels_path = _find_idx_file(directory, f'{prefix}-labels-idx1-ubyte', name)
  images = read_idx(images_path, expected_ndim=3)
  labels = read_idx(labels_path, expected_ndim=1)
  if images.shape[0] != labels.shape[0]:
    raise DatasetError(
        f'{images_path!r} holds {images.shape[0]} images but {labels_path!r} '
        f'holds {labels.shape[0]} labels; the files do not belong together')
  if tuple(images.shape[1:]) != info.image_shape[:2]:
    raise DatasetError(
        f'{images_path!r} holds images of size {images.shape[1:]}, expected '
        f'{info.image_shape[:2]} for {name!r}; wrong file?')
  # frombuffer views are read-only; copy once so callers own writable arrays.
  return images[..., None].copy(), labels.astype(np.int32)
