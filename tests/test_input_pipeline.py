"""Batching: data order is a function of (seed, step); eval sees every example once;
validation images are held out per class, the same ones on every run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nin_jax.data import augment
from nin_jax.data import datasets
from nin_jax.data import input_pipeline


def tiny_data(n=50):
  images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32)
  return input_pipeline.InMemoryData(images, np.arange(n, dtype=np.int32), images[:7],
                                     np.arange(7, dtype=np.int32), 10)


def test_each_epoch_is_a_fresh_permutation_without_repeats():
  n, batch = 50, 8
  per_epoch = input_pipeline.steps_per_epoch(n, batch)
  assert per_epoch == 6  # the remainder of 2 is not a short batch
  epoch0 = np.concatenate([input_pipeline.train_indices(n, batch, 0, s) for s in range(6)])
  epoch1 = np.concatenate([input_pipeline.train_indices(n, batch, 0, s) for s in range(6, 12)])
  assert len(set(epoch0)) == 48 and len(set(epoch1)) == 48
  assert not np.array_equal(epoch0, epoch1)


def test_batches_depend_only_on_seed_and_step():
  data = tiny_data()
  from_start = input_pipeline.train_batches(data, 8, seed=3)
  batches = [next(from_start)['label'] for _ in range(10)]
  resumed = input_pipeline.train_batches(data, 8, seed=3, start_step=7)
  np.testing.assert_array_equal(next(resumed)['label'], batches[7])
  other_seed = input_pipeline.train_batches(data, 8, seed=4)
  assert not np.array_equal(next(other_seed)['label'], batches[0])


def test_eval_pads_the_last_batch_and_masks_it():
  data = tiny_data()
  batches = list(input_pipeline.eval_batches(data.test_images, data.test_labels, 4))
  assert len(batches) == input_pipeline.num_eval_batches(7, 4) == 2
  np.testing.assert_array_equal(batches[1]['mask'], [1, 1, 1, 0])
  seen = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(seen, np.arange(7))


def test_each_process_takes_its_own_rows(monkeypatch):
  data = tiny_data()
  full = next(input_pipeline.train_batches(data, 8, seed=0))['label']
  parts = []
  for pid in range(2):
    monkeypatch.setattr(jax, 'process_count', lambda: 2)
    monkeypatch.setattr(jax, 'process_index', lambda pid=pid: pid)
    parts.append(next(input_pipeline.train_batches(data, 8, seed=0))['label'])
  np.testing.assert_array_equal(np.concatenate(parts), full)


def test_translate_shifts_content_and_flip_mirrors():
  image = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)
  shifted = augment.random_translate(jnp.repeat(image, 64, 0), jax.random.key(0), 2)
  positions = {tuple(np.argwhere(np.asarray(s[..., 0]))[0]) for s in shifted if s.sum() > 0}
  assert len(positions) > 5  # many different offsets
  assert all(abs(r - 2) <= 2 and abs(c - 2) <= 2 for r, c in positions)
  ramp = jnp.arange(5.0).reshape(1, 1, 5, 1).repeat(200, 0)
  flipped = augment.random_flip(ramp, jax.random.key(1))
  n_flipped = int(jnp.sum(flipped[:, 0, 0, 0] == 4.0))
  assert 70 < n_flipped < 130
  assert bool(jnp.all((flipped[:, 0, 0, 0] == 4.0) | (flipped[:, 0, 0, 0] == 0.0)))


def test_hold_out_per_class_is_exact_disjoint_and_deterministic():
  labels = np.random.default_rng(0).integers(0, 10, 3000)
  keep, held = input_pipeline.hold_out_per_class(labels, 40, 10, seed=[322, 0])
  assert np.bincount(labels[held], minlength=10).tolist() == [40] * 10
  assert len(keep) == 3000 - 400 and not np.intersect1d(keep, held).size
  np.testing.assert_array_equal(np.union1d(keep, held), np.arange(3000))
  again = input_pipeline.hold_out_per_class(labels, 40, 10, seed=[322, 0])
  np.testing.assert_array_equal(again[1], held)
  other = input_pipeline.hold_out_per_class(labels, 40, 10, seed=[322, 1])
  assert not np.array_equal(other[1], held)  # train and extra draw apart
  with pytest.raises(datasets.DatasetError, match='class 3 has'):
    input_pipeline.hold_out_per_class(np.where(labels == 3, 0, labels), 1, 10, seed=0)


def test_svhn_trains_on_train_plus_extra_less_the_held_out_images():
  # The paper's split, scaled down: (400, 200) per class → (2, 1) on mock data.
  import tensorflow_datasets as tfds
  from nin_jax.configs import svhn
  dataset = svhn.get_config().dataset
  assert (dataset.train_extra, dataset.validation_per_class_train,
          dataset.validation_per_class_extra) == (True, 400, 200)
  assert dataset.preprocessing == 'gcn_lcn'
  dataset.validation_per_class_train, dataset.validation_per_class_extra = 2, 1
  with tfds.testing.mock_data(num_examples=60):
    data = input_pipeline.load(dataset)
    again = input_pipeline.load(dataset)
  assert (data.num_train, data.num_validation, data.num_test) == (120 - 30, 30, 60)
  assert np.bincount(data.val_labels, minlength=10).tolist() == [3] * 10
  np.testing.assert_array_equal(data.val_images, again.val_images)
  np.testing.assert_array_equal(data.train_labels, again.train_labels)
  batches = list(data.validation_batches(16))
  assert sum(int(b['mask'].sum()) for b in batches) == 30
