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

import jax
import ml_collections
import numpy as np
from absl import logging

from nin_jax import datasets, preprocess

PREPROCESSINGS = ('standardize', 'gcn_zca', 'lcn', 'none')


@dataclasses.dataclass
class InMemoryData:
  """A preprocessed train/test pair held in host memory."""
  train_images: np.ndarray  # float32 (N, H, W, C)
  train_labels: np.ndarray  # int32 (N,)
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])

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

  def eval_batches(self, global_batch_size: int):
    return eval_batches(self.test_images, self.test_labels, global_batch_size)


def create(dataset: ml_collections.ConfigDict):
  """The source config.dataset names: ImageNet streams, the rest sit in memory."""
  if dataset.name == 'imagenet2012':
    from nin_jax import imagenet_input
    return imagenet_input.ImageNetData(dataset.data_dir or None, crop=dataset.image_size)
  return load(dataset)


def default_cache_dir() -> str:
  return os.path.join(os.path.expanduser('~'), '.cache', 'nin_jax')


def load(dataset: ml_collections.ConfigDict) -> InMemoryData:
  """Loads and preprocesses both splits named by config.dataset."""
  arrays = {}
  for split in ('train', 'test'):
    images, labels = datasets.load_arrays(
        dataset.name, split, source=dataset.source,
        data_dir=dataset.data_dir or None, idx_dir=dataset.idx_dir or None)
    limit = dataset.train_subset if split == 'train' else dataset.test_subset
    if limit > len(labels):
      raise ValueError(f'config.dataset.{split}_subset={limit} is larger than the '
                       f'{len(labels)} images of the {dataset.name} {split} split')
    if limit:
      # A fixed, class-mixed subset: the first `limit` of a seeded permutation.
      keep = np.sort(np.random.default_rng(1234).permutation(len(labels))[:limit])
      images, labels = images[keep], labels[keep]
    arrays[split] = (images, labels)
  num_classes = datasets.DATASETS[dataset.name].num_classes
  (train_x, train_y), (test_x, test_y) = arrays['train'], arrays['test']
  train_x, test_x = _preprocess(dataset, train_x, test_x)
  logging.info('%s: %d train / %d test images of shape %s (%s)', dataset.name,
               len(train_y), len(test_y), train_x.shape[1:], dataset.preprocessing)
  return InMemoryData(train_x, train_y.astype(np.int32), test_x,
                      test_y.astype(np.int32), num_classes)


def _preprocess(dataset, train_x, test_x):
  kind = dataset.preprocessing
  if kind == 'standardize':
    mean, std = preprocess.channel_stats(train_x)
    return (preprocess.standardize(train_x, mean, std),
            preprocess.standardize(test_x, mean, std))
  if kind == 'gcn_zca':
    key = f'{dataset.name}_{len(train_x)}'
    return preprocess.gcn_zca(
        train_x, test_x, cache_dir=dataset.cache_dir or default_cache_dir(),
        cache_key=key, scale=dataset.gcn_scale, filter_bias=dataset.zca_filter_bias)
  if kind == 'lcn':
    return tuple(preprocess.local_contrast_normalize(x.astype(np.float32) / 255.0)
                 for x in (train_x, test_x))
  if kind == 'none':
    return train_x.astype(np.float32) / 255.0, test_x.astype(np.float32) / 255.0
  raise ValueError(f'unknown preprocessing {kind!r}; choose one of {PREPROCESSINGS}')


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch (the remainder is reshuffled into the next epoch)."""
  return num_examples // global_batch_size


def train_indices(num_examples: int, global_batch_size: int, seed: int,
                  step: int) -> np.ndarray:
  """Dataset indices of global batch `step`: a fresh permutation each epoch."""
  per_epoch = steps_per_epoch(num_examples, global_batch_size)
  epoch, k = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[k * global_batch_size:(k + 1) * global_batch_size]


def train_batches(data: InMemoryData, global_batch_size: int, seed: int,
                  start_step: int = 0, *, indices_only: bool = False
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of each global training batch, from `start_step` on.

  With `indices_only`, batches are {'index': ...} into the training split, for
  a train step that holds the split on device and gathers the rows itself.
  """
  local = _process_rows(global_batch_size)
  n = len(data.train_labels)
  step = start_step
  while True:
    idx = train_indices(n, global_batch_size, seed, step)[local]
    if indices_only:
      yield {'index': idx.astype(np.int32)}
    else:
      yield {'image': data.train_images[idx], 'label': data.train_labels[idx]}
    step += 1


def eval_batches(images: np.ndarray, labels: np.ndarray,
                 global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """The whole split in padded global batches, this process's rows, with a mask."""
  local = _process_rows(global_batch_size)
  n = len(labels)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start, start + global_batch_size)[local]
    valid = idx < n
    idx = np.where(valid, idx, 0)
    yield {'image': images[idx], 'label': labels[idx],
           'mask': valid.astype(np.float32)}


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return -(-num_examples // global_batch_size)


def _process_rows(global_batch_size: int) -> slice:
  per_process = global_batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)
