"""Input pipeline: each process's share of every global batch, as numpy.

The datasets the paper uses below ImageNet fit in host memory, so a split is
loaded whole, preprocessed once (per-channel standardisation, or GCN + ZCA as in
the paper, or LCN for SVHN) and batched by index. Batch k of a run is a pure
function of (seed, k): resuming at step k continues the exact data order.
Random translation and flips happen inside the compiled train step
(`augment.py`), keyed the same way.

Evaluation walks the whole test split in fixed-size batches; the last one is
padded and carries a mask, so no example is dropped or counted twice.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import ml_collections
import numpy as np
from absl import logging

from nin_jax.data import datasets
from nin_jax.data import imagenet_input
from nin_jax.data import local_contrast
from nin_jax.data import mean_image
from nin_jax.data import preprocess
from nin_jax.data.preprocess import PREPROCESSINGS
# The data order lives in a jax-free module (ImageNet's decode workers read it).
from nin_jax.data.data_order import (  # noqa: F401
    epoch_order, num_eval_batches, process_rows, steps_per_epoch, train_indices)

# Seed of the held-out validation images (fixed: the split is part of the dataset).
VALIDATION_SEED = 322


@dataclasses.dataclass
class InMemoryData:
  """A preprocessed train/test pair held in host memory."""
  train_images: np.ndarray  # float32 (N, H, W, C)
  train_labels: np.ndarray  # int32 (N,)
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  preprocessing: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  """What fit_preprocessing fitted on the training split (e.g. mean and std)."""
  # Held out of training for validation metrics (SVHN as the paper split it).
  val_images: np.ndarray | None = None
  val_labels: np.ndarray | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])

  @property
  def device_input(self):
    """None: the batches' images are the model's input already (cf. ImageNetData's)."""
    return None

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  @property
  def num_test(self) -> int:
    return len(self.test_labels)

  def train_batches(self, global_batch_size: int, seed: int, start_step: int = 0,
                    *, indices_only: bool = False):
    return train_batches(self, global_batch_size, seed, start_step,
                         indices_only=indices_only)

  @property
  def num_validation(self) -> int:
    return 0 if self.val_labels is None else len(self.val_labels)

  def eval_batches(self, global_batch_size: int):
    return eval_batches(self.test_images, self.test_labels, global_batch_size)

  def validation_batches(self, global_batch_size: int):
    return eval_batches(self.val_images, self.val_labels, global_batch_size)


def create(dataset: ml_collections.ConfigDict):
  """The source config.dataset names: ImageNet streams, the rest sit in memory."""
  if dataset.name == 'imagenet2012':
    data = imagenet_input.ImageNetData(
        dataset.data_dir or None, crop=dataset.image_size, workers=dataset.workers,
        resized_dir=dataset.resized_dir)
    if dataset.imagenet_mean == 'image':
      data.mean = mean_image.imagenet_mean_image(data.train_images, dataset.cache_dir,
                                                 workers=data.workers)
    return data
  return load(dataset)


def default_cache_dir() -> str:
  return os.path.join(os.path.expanduser('~'), '.cache', 'nin_jax')


def load(dataset: ml_collections.ConfigDict) -> InMemoryData:
  """Loads and preprocesses the splits named by config.dataset.

  Training is 'train' (plus 'extra' with dataset.train_extra), less the
  validation images held out of each (dataset.validation_per_class_train /
  _extra per class), then cut to dataset.train_subset.
  """
  def read(split):
    return datasets.load_arrays(
        dataset.name, split, source=dataset.source,
        data_dir=dataset.data_dir or None, idx_dir=dataset.idx_dir or None)

  num_classes = datasets.DATASETS[dataset.name].num_classes
  sources = [('train', dataset.validation_per_class_train)]
  if dataset.train_extra:
    sources.append(('extra', dataset.validation_per_class_extra))
  train_parts, val_parts = [], []
  for split, per_class in sources:
    images, labels = read(split)
    keep, held = hold_out_per_class(labels, per_class, num_classes,
                                    seed=[VALIDATION_SEED, len(val_parts)], split=split)
    train_parts.append((images[keep], labels[keep]))
    val_parts.append((images[held], labels[held]))
  train_x, train_y = _concat(train_parts)
  val_x, val_y = _concat(val_parts)
  test_x, test_y = read('test')
  train_x, train_y = _subset(train_x, train_y, dataset.train_subset, f'{dataset.name} train')
  test_x, test_y = _subset(test_x, test_y, dataset.test_subset, f'{dataset.name} test')
  # Validation and test images are transformed with the training split's statistics.
  fitted = fit_preprocessing(dataset, train_x)
  train_x, test_x = (apply_preprocessing(dataset, fitted, x) for x in (train_x, test_x))
  has_val = len(val_y) > 0
  val_x = apply_preprocessing(dataset, fitted, val_x) if has_val else None
  logging.info('%s: %d train / %d validation / %d test images of shape %s (%s)',
               dataset.name, len(train_y), len(val_y), len(test_y),
               train_x.shape[1:], dataset.preprocessing)
  return InMemoryData(train_x, train_y.astype(np.int32), test_x,
                      test_y.astype(np.int32), num_classes, fitted,
                      val_images=val_x,
                      val_labels=val_y.astype(np.int32) if has_val else None)


def hold_out_per_class(labels: np.ndarray, per_class: int, num_classes: int, *,
                       seed, split: str = 'train') -> tuple[np.ndarray, np.ndarray]:
  """(kept, held-out) sorted indices: `per_class` images of every class held out.

  Which images: the first `per_class` of each class in a permutation seeded
  by `seed`, so the split is the same on every run and every host.
  """
  if not per_class:
    return np.arange(len(labels)), np.zeros((0,), np.int64)
  order = np.random.default_rng(seed).permutation(len(labels))
  held = []
  for c in range(num_classes):
    members = order[labels[order] == c]
    if len(members) < per_class:
      raise datasets.DatasetError(
          f'{split}: class {c} has {len(members)} images, fewer than the'
          f' {per_class} to hold out for validation')
    held.append(members[:per_class])
  held = np.sort(np.concatenate(held))
  return np.setdiff1d(np.arange(len(labels)), held), held


def _concat(parts):
  if len(parts) == 1:
    return parts[0]
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _subset(images, labels, limit: int, split: str):
  """A fixed, class-mixed subset: the first `limit` of a seeded permutation."""
  if limit > len(labels):  # `split` is e.g. 'cifar10 train'.
    raise ValueError(f'config.dataset.{split.split()[-1]}_subset={limit} is larger than the '
                     f'{len(labels)} images of the {split} split')
  if not limit:
    return images, labels
  keep = np.sort(np.random.default_rng(1234).permutation(len(labels))[:limit])
  return images[keep], labels[keep]


def fit_preprocessing(dataset, train_x: np.ndarray) -> dict[str, np.ndarray]:
  """The statistics config.dataset.preprocessing fits on the uint8 training split.

  Whatever arrays they are, `apply_preprocessing` needs only them and the
  config to preprocess new images: they are saved beside the checkpoint
  (nin_jax/train/predict.py) so a trained model predicts without the dataset.
  """
  kind = dataset.preprocessing
  if kind == 'standardize':
    mean, std = preprocess.channel_stats(train_x)
    return {'mean': mean, 'std': std}
  if kind == 'gcn_zca':
    zca = preprocess.fit_gcn_zca(
        train_x, cache_dir=dataset.cache_dir or default_cache_dir(),
        cache_key=f'{dataset.name}_{len(train_x)}', scale=dataset.gcn_scale,
        filter_bias=dataset.zca_filter_bias)
    return {'zca_mean': zca.mean, 'zca_whitening': zca.whitening}
  if kind == 'mean_image':
    # The authors' MNIST provider: minus the training mean image, no division
    # by a standard deviation ([0, 1] pixel scale: inferred).
    return {'mean_image': mean_image.mean_image(
        train_x[i:i + 5000] for i in range(0, len(train_x), 5000))}
  if kind in ('gcn_lcn', 'lcn', 'none'):
    return {}
  raise ValueError(f'unknown preprocessing {kind!r}; choose one of {PREPROCESSINGS}')


def apply_preprocessing(dataset, fitted: dict[str, np.ndarray],
                        images: np.ndarray) -> np.ndarray:
  """uint8 images (N, H, W, C) → the model's float32 input, with fitted statistics."""
  kind = dataset.preprocessing
  if dataset.name in datasets.STREAMED:
    return imagenet_input.normalize(images, fitted)
  if kind == 'standardize':
    return preprocess.standardize(images, fitted['mean'], fitted['std'])
  if kind == 'gcn_zca':
    zca = preprocess.ZCA(mean=fitted['zca_mean'], whitening=fitted['zca_whitening'])
    return preprocess.apply_zca(
        preprocess.global_contrast_normalize(images, scale=dataset.gcn_scale), zca)
  if kind == 'mean_image':
    return (images.astype(np.float32) - fitted['mean_image']) / np.float32(255.0)
  if kind == 'gcn_lcn':
    return local_contrast.gcn_lcn(images)
  if kind == 'lcn':
    return local_contrast.local_contrast_normalize(images.astype(np.float32) / 255.0)
  if kind == 'none':
    return images.astype(np.float32) / 255.0
  raise ValueError(f'unknown preprocessing {kind!r}; choose one of {PREPROCESSINGS}')


def train_batches(data: InMemoryData, global_batch_size: int, seed: int,
                  start_step: int = 0, *, indices_only: bool = False
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of each global training batch, from `start_step` on.

  With `indices_only`, batches are {'index': ...} into the training split, for
  a train step that holds the split on device and gathers the rows itself.
  """
  local = process_rows(global_batch_size)
  n = len(data.train_labels)
  per_epoch = steps_per_epoch(n, global_batch_size)
  step, order_epoch, order = start_step, None, None
  while True:
    # As train_indices(n, global_batch_size, seed, step), with each epoch's
    # permutation drawn once: drawing it per step cost about a millisecond of
    # host time per step for 60k images, as much as a whole step on a GPU.
    epoch, k = divmod(step, per_epoch)
    if epoch != order_epoch:
      order_epoch, order = epoch, epoch_order(n, seed, epoch)
    idx = order[k * global_batch_size:(k + 1) * global_batch_size][local]
    if indices_only:
      yield {'index': idx.astype(np.int32)}
    else:
      yield {'image': data.train_images[idx], 'label': data.train_labels[idx]}
    step += 1


def eval_batches(images: np.ndarray, labels: np.ndarray,
                 global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """The whole split in padded global batches, this process's rows, with a mask."""
  local = process_rows(global_batch_size)
  n = len(labels)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start, start + global_batch_size)[local]
    valid = idx < n
    idx = np.where(valid, idx, 0)
    yield {'image': images[idx], 'label': labels[idx],
           'mask': valid.astype(np.float32)}
