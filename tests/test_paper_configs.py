"""Every experiment config is the paper's setup and trains one step on mock data."""

import glob
import importlib.util
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO
from nin_jax.data import imagenet_input
from nin_jax.data import input_pipeline
from nin_jax.model import nin
from nin_jax.model import architectures
from nin_jax.train import loop as train

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(REPO, 'nin_jax', 'configs', '[!_]*.py')))


def get_config(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, 'nin_jax', 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_every_paper_row_has_a_config():
  for name in ('cifar10', 'cifar10_noaug', 'cifar100', 'svhn', 'mnist', 'imagenet',
               'cifar10_caffe', 'cifar10_nodropout', 'cifar10_cnn', 'cifar10_cnn_fc',
               'cifar10_cnn_fc_dropout', 'cifar10_modern', 'fashion_mnist'):
    assert name in CONFIGS


def test_cifar10_is_the_authors_setup():
  c = get_config('cifar10')
  assert (c.model.preset, c.model.init, c.model.batch_norm, c.model.dropout_rate) == (
      'cifar10', 'paper', False, 0.5)
  assert (c.optim.batch_size, c.optim.learning_rate, c.optim.momentum) == (128, 0.1, 0.9)
  assert (c.optim.bias_lr_mult, c.optim.last_layer_lr_mult, c.optim.weight_decay) == (
      2.0, 0.1, 1e-4)
  assert tuple(c.optim.decay_epochs) == (200.0, 230.0) and c.num_epochs == 260.0
  assert c.dataset.preprocessing == 'gcn_zca'
  assert (c.dataset.gcn_scale, c.dataset.zca_filter_bias) == (55.0, 0.1)
  assert c.augment.flip and c.augment.translate > 0
  noaug = get_config('cifar10_noaug')
  assert not noaug.augment.flip and noaug.augment.translate == 0


@pytest.mark.parametrize('name, form', [
    ('cifar10', 'cuda_convnet'), ('cifar10_noaug', 'cuda_convnet'),
    ('cifar100', 'cuda_convnet'), ('svhn', 'cuda_convnet'), ('mnist', 'cuda_convnet'),
    ('imagenet', 'inverted'), ('cifar10_caffe', 'inverted'), ('cifar10_modern', 'inverted'),
    ('fashion_mnist', 'inverted')])
def test_dropout_is_the_framework_of_the_authors_run(name, form):
  # cuda-convnet runs (the authors' NIN/ files) vs Caffe zoo runs.
  assert get_config(name).model.dropout_form == form


def test_cifar100_is_the_authors_files_not_the_papers_sentence():
  # NIN/cifar-100_params: epsW 0.01 × coeff 2, wc 0.001 / coeff 2, the last
  # layer at the same rate as the others.
  c = get_config('cifar100')
  assert (c.model.preset, c.dataset.preprocessing) == ('cifar100', 'gcn_zca')
  assert (c.optim.learning_rate, c.optim.weight_decay) == (0.02, 5e-4)
  assert (c.optim.bias_lr_mult, c.optim.last_layer_lr_mult) == (2.0, 1.0)
  assert not c.augment.flip and c.augment.translate == 0


def test_cifar10_caffe_is_the_zoo_solver():
  # 120k iterations at batch 128, one ×0.1 step at 100k; cccp6 weights and
  # biases at blobs_lr 0.1 (bias rate 0.01); average pool2; no augmentation.
  from nin_jax.train import optim
  c = get_config('cifar10_caffe')
  steps_per_epoch = input_pipeline.steps_per_epoch(50_000, c.optim.batch_size)
  assert c.optim.batch_size == 128
  assert int(round(c.num_epochs * steps_per_epoch)) == 120_000
  assert [int(round(e * steps_per_epoch)) for e in c.optim.decay_epochs] == [100_000]
  assert (c.optim.learning_rate, c.optim.bias_lr_mult, c.optim.last_layer_lr_mult) == (
      0.1, 2.0, 0.1)
  assert c.optim.learning_rate * optim.last_bias_lr_mult(c.optim) == pytest.approx(0.01)
  assert architectures.get_preset(c.model.preset).blocks[1].pool == 'avg'
  assert not c.augment.flip and c.augment.translate == 0


def test_the_papers_missing_experiments():
  # Figure 3: NIN without dropout (14.51%); section 4.6: the conventional CNN
  # with FC (17.56%), FC + dropout (15.99%) and GAP (16.46%) heads.
  nodropout, noaug = get_config('cifar10_nodropout'), get_config('cifar10_noaug')
  assert nodropout.model.dropout_rate == 0.0
  nodropout.model.dropout_rate = noaug.model.dropout_rate
  assert nodropout.to_dict() == noaug.to_dict()
  heads = {name: (c.model.preset, c.model.head, tuple(c.model.fc_hidden), c.model.fc_dropout)
           for name in ('cifar10_cnn', 'cifar10_cnn_fc', 'cifar10_cnn_fc_dropout')
           for c in [get_config(name)]}
  assert heads == {'cifar10_cnn': ('cifar10_cnn', 'gap', (), 0.0),
                   'cifar10_cnn_fc': ('cifar10_cnn', 'fc', (), 0.0),
                   'cifar10_cnn_fc_dropout': ('cifar10_cnn', 'fc', (), 0.5)}


def test_imagenet_is_the_zoo_solver_with_linear_scaling():
  c = get_config('imagenet')
  assert (c.optim.batch_size, c.optim.reference_batch_size, c.optim.learning_rate) == (
      64, 64, 0.01)
  assert c.optim.weight_decay == 5e-4
  # 200k and 400k of 450k iterations at batch 64 on 1,281,167 images.
  steps_per_epoch = 1_281_167 // 64
  assert round(c.optim.decay_epochs[0] * steps_per_epoch, -4) == 200_000
  assert round(c.num_epochs * steps_per_epoch, -4) == 450_000
  assert nin.count_params(
      nin.NIN(architectures.get_preset(c.model.preset), rngs=__import__('flax').nnx.Rngs(0))
  ) == 7_595_176


@pytest.fixture(scope='module')
def zca_cache(tmp_path_factory):
  # Shared so configs on the same (mock) dataset fit ZCA once, as real runs do.
  return str(tmp_path_factory.mktemp('zca_cache'))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_one_step_on_mock_data(name, tmp_path, zca_cache):
  config = get_config(name)
  config.optim.batch_size = 8
  config.eval_batch_size = 8
  config.max_steps = 1
  config.write_plots = False
  config.dataset.cache_dir = zca_cache
  if config.dataset.name == 'imagenet2012':
    config.optim.batch_size = config.eval_batch_size = 2
    config.model.width_multiplier = 0.125  # the full net is checked above; keep CI fast
  if config.dataset.source == 'idx':
    config.dataset.train_subset, config.dataset.test_subset = 64, 20
  mock_examples = 24
  held_out = config.dataset.validation_per_class_train > 0
  if held_out:  # SVHN's 400 + 200 per class, scaled to the mock data.
    config.dataset.validation_per_class_train = 2
    config.dataset.validation_per_class_extra = 1
    mock_examples = 60
  with tfds.testing.mock_data(num_examples=mock_examples):
    result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['step'] == 1
  assert np.isfinite(result['test/loss'])
  assert result['test/examples'] == (20 if config.dataset.source == 'idx' else mock_examples)
  if held_out:  # Validation metrics are logged beside the test metrics.
    assert result['val/examples'] == 30 and np.isfinite(result['val/loss'])


def test_imagenet_pipeline_crops_mirrors_and_subtracts_the_mean():
  with tfds.testing.mock_data(num_examples=10):
    data = imagenet_input.ImageNetData(None, crop=227)
    batch = next(data.train_batches(4, seed=0))
    again = next(data.train_batches(4, seed=0))
    later = next(data.train_batches(4, seed=0, start_step=1))
    eval_batches = list(data.eval_batches(4))
  # uint8 crops and where each was cut; the step subtracts the mean on device.
  assert batch['image'].shape == (4, 227, 227, 3) and batch['image'].dtype == np.uint8
  np.testing.assert_array_equal(batch['image'], again['image'])  # seeded
  assert not np.array_equal(batch['label'], later['label']) or not np.array_equal(
      batch['image'], later['image'])
  images = np.asarray(data.device_input(batch))
  assert images.dtype == np.float32 and images.shape == batch['image'].shape
  assert images.min() >= -123 and images.max() <= 255 - 104
  # 10 validation images in batches of 4: 4 + 4 + 2 (padded, masked).
  assert [int(b['mask'].sum()) for b in eval_batches] == [4, 4, 2]


def test_imagenet_missing_is_a_clear_error(tmp_path):
  from nin_jax.data import datasets
  with pytest.raises(datasets.DatasetError, match='manual_dir'):
    imagenet_input.ImageNetData(str(tmp_path))


def test_imagenet_resumes_at_step_k_without_reading_a_record_of_the_steps_before():
  # The stream's position is the step: resumed at k it yields exactly the
  # straight run's batches k, k+1, ... and reads none of the records that
  # steps 0..k-1 consumed (tf.data's skip() used to read all of them again).
  k, batch, n = 5, 4, 3
  with tfds.testing.mock_data(num_examples=48):
    straight_data = imagenet_input.ImageNetData(None, crop=32)
    stream = straight_data.train_batches(batch, seed=0)
    straight = [next(stream) for _ in range(k + n)]
    data = imagenet_input.ImageNetData(None, crop=32)
    read = []
    data.train_images = Recorded(data.train_images, read)
    stream = data.train_batches(batch, seed=0, start_step=k)
    resumed = [next(stream) for _ in range(n)]
  for want, got in zip(straight[k:], resumed):
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
  before_k = {int(i) for step in range(k)
              for i in input_pipeline.train_indices(48, batch, 0, step)}
  print(f'resumed at step {k}: {len(read)} records read, '
        f'{len(before_k & set(read))} of them consumed before step {k}')
  assert not before_k & set(read)
  assert len(read) == n * batch  # Exactly what the next batches need.


class Recorded:
  """A split that notes every record index read from it."""

  def __init__(self, images, read):
    self.images, self.read = images, read

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    self.read.append(int(index))
    return self.images[index]
