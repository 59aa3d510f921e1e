"""Configs load, every field is overridable from the command line, and nonsense is
refused with a message that names the field."""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, TINY, run_cli
from nin_jax.train import config as config_lib

pytestmark = pytest.mark.core

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, 'nin_jax', 'configs', '[!_]*.py')))


def load_config_module(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Importing, building and checking a config needs no jax, flax or optax: config
# files load fast (--help, --print_config, sweeps that only read them).
JAX_FREE = """
import sys
from nin_jax.configs import {name} as module
from nin_jax.train import config as config_lib
config_lib.validate(module.get_config())
heavy = [m for m in ('jax', 'flax', 'optax') if m in sys.modules]
assert not heavy, f'importing nin_jax.configs.{name} imported {{heavy}}'
"""


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_a_config_file_imports_and_validates_without_jax(path):
  name = os.path.basename(path)[:-3]
  proc = subprocess.run([sys.executable, '-c', JAX_FREE.format(name=name)], capture_output=True,
                        text=True, env={**os.environ, 'PYTHONPATH': REPO}, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_every_config_is_valid_and_documented(path):
  module = load_config_module(path)
  assert module.__doc__ and len(module.__doc__) > 80
  config = module.get_config()
  config_lib.validate(config)
  # Configs only override fields of the schema; they never invent new ones.
  base = config_lib.base_config()
  assert set(config.keys()) == set(base.keys())
  for group in ('dataset', 'augment', 'model', 'optim'):
    assert set(config[group].keys()) == set(base[group].keys()), group


@pytest.mark.parametrize('name', ['cifar100', 'svhn', 'mnist', 'cifar10_cnn',
                                  'cifar10_caffe', 'cifar10_nodropout'])
def test_unpublished_values_are_marked_inferred(name):
  # The authors never published these schedules / sizes; the docstring says so.
  module = load_config_module(os.path.join(REPO, 'nin_jax', 'configs', f'{name}.py'))
  assert 'INFERRED' in module.__doc__


SWEPT_CONFIG_FILES = [p for p in CONFIG_FILES if 'def sweep(' in open(p).read()]


def test_the_main_configs_have_sweeps():
  names = {os.path.basename(p) for p in SWEPT_CONFIG_FILES}
  assert {'cifar10.py', 'fashion_mnist.py', 'imagenet.py'} <= names


@pytest.mark.parametrize('path', SWEPT_CONFIG_FILES, ids=os.path.basename)
def test_sweeps_name_existing_fields(path):
  module = load_config_module(path)
  config = module.get_config()
  trials = list(module.sweep())
  assert trials
  for trial in trials:
    for key in trial:
      node = config
      for part in key.split('.'):
        node = node[part]  # KeyError if the sweep names a field that does not exist


def test_command_line_overrides_reach_the_run(tmp_path):
  overrides = {**TINY, 'max_steps': 2, 'optim.momentum': 0.8, 'model.head': 'fc',
               'model.fc_hidden': '(16,)', 'seed': 7}
  proc = run_cli('fashion_mnist.py', tmp_path, overrides)
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['optim']['momentum'] == 0.8
  assert saved['model']['head'] == 'fc'
  assert saved['model']['fc_hidden'] == [16]
  assert saved['seed'] == 7
  assert 'final test accuracy' in proc.stdout
  assert re.search(r'^\d+m\d\ds wall over 1 launch \(python -m nin_jax.train.run_history ',
                   proc.stdout, re.M)


@pytest.mark.parametrize('override, message', [
    ('--config.optim.learning_rat=0.1', 'learning_rat'),
    ('--config.optim.batch_size=abc', 'batch_size'),
])
def test_unknown_key_or_wrong_type_is_refused(tmp_path, override, message):
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', extra_args=[override])
  assert proc.returncode != 0
  assert message in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'w').exists()  # refused before anything was written


@pytest.mark.parametrize('field, value, message', [
    ('optim.learning_rate', -0.1, 'must be positive'),
    ('model.dropout_rate', 1.5, 'must be in [0, 1)'),
    ('model.preset', 'resnet', 'unknown preset'),
    ('dataset.name', 'imagenet21k', 'unknown dataset'),
    ('optim.schedule', 'linear', 'choose one of'),
    ('model.dtype', 'float16', 'choose one of'),
    ('model.dropout_form', 'caffe', 'choose one of'),
    ('dataset.train_extra', True, 'has no extra split'),
    ('optim.decay_scope', 'biases', 'choose one of'),
    ('dataset.imagenet_mean', 'channel', 'choose one of'),
    ('dataset.validation_per_class_extra', 200, 'needs dataset.train_extra'),
    ('dataset.on_device', True, 'streamed'),
    # Fields the ImageNet stream would ignore: refused rather than ignored.
    ('dataset.validation_per_class_train', 50, 'streamed'),
    ('dataset.train_subset', 1000, 'streamed'),
    ('dataset.test_subset', 1000, 'streamed'),
])
def test_validation_names_the_field(field, value, message):
  config = config_lib.base_config()
  if message == 'streamed':
    config.dataset.name = 'imagenet2012'
  group, leaf = field.split('.')
  config[group][leaf] = value
  with pytest.raises(ValueError, match=f'config.{field}') as error:
    config_lib.validate(config)
  assert message in str(error.value)
