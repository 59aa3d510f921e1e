"""The command line a new user meets: --help, --print_config, and a quiet start."""

import os

import ml_collections
import pytest

from conftest import REPO, TINY, run_cli
from nin_jax.train import config as config_lib
from nin_jax.cli import config_doc


def _leaves(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def test_every_config_field_has_its_comment_from_config_py():
  comments = config_doc.field_comments()
  missing = [f for f in _leaves(config_lib.base_config()) if not comments.get(f)]
  assert not missing, f'fields without a comment in nin_jax/train/config.py: {missing}'
  assert comments['optim.batch_size'] == 'global, across all devices and hosts'


@pytest.mark.core
def test_print_config_prints_the_resolved_config_and_exits(tmp_path):
  result = run_cli('cifar10.py', tmp_path / 'run', {'optim.learning_rate': 0.05},
                   extra_args=['--print_config'])
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert '--config.<name>=<value>' in lines[0]
  fields = {line.split(' = ')[0]: line for line in lines if ' = ' in line}
  assert set(fields) == set(_leaves(config_lib.base_config()))
  assert fields['optim.learning_rate'].startswith('optim.learning_rate = 0.05 ')  # the override
  assert fields['dataset.preprocessing'].startswith("dataset.preprocessing = 'gcn_zca' ")  # cifar10.py
  assert fields['optim.batch_size'].endswith('# global, across all devices and hosts')
  assert not (tmp_path / 'run').exists()  # nothing trained


@pytest.mark.core
def test_help_says_how_to_list_and_override_fields():
  result = run_cli('cifar10.py', None, extra_args=['--help'])
  assert '--[no]print_config' in result.stdout and '--config.<field>=<value>' in result.stdout


C_PLUS_PLUS_NOISE = ('absl::InitializeLog', 'cpu_feature_guard', 'oneDNN custom operations',
                     'PjRt-IFRT')


def test_start_is_quiet(tmp_path):
  """TensorFlow starts (TFDS source) without its C++ INFO lines; the user's error still shows.

  TF_CPP_MIN_LOG_LEVEL set but empty (as some wrappers do) would let jaxlib log
  at INFO; run_cli's TF_ENABLE_ONEDNN_OPTS=1 makes TensorFlow log its oneDNN
  line on any CPU.
  """
  result = run_cli('fashion_mnist.py', tmp_path / 'run',
                   {'dataset.source': 'tfds', 'dataset.data_dir': str(tmp_path / 'none'),
                    'dataset.train_subset': 64, 'model.width_multiplier': 0.125},
                   env={'TF_CPP_MIN_LOG_LEVEL': ''})
  assert result.returncode == 2 and 'is not prepared' in result.stderr
  for noise in C_PLUS_PLUS_NOISE:
    assert noise not in result.stderr, result.stderr


def test_a_run_on_idx_files_never_imports_tensorflow(tmp_path):
  """The quickstart's path (IDX files, metrics, TensorBoard hparams, plots) needs no TensorFlow.

  A `tensorflow` package that ends the process when imported stands first on
  the path; the run must finish all the same, and print nothing on stderr.
  """
  fake = tmp_path / 'site' / 'tensorflow'
  fake.mkdir(parents=True)
  (fake / '__init__.py').write_text(
      'import os, sys, traceback\n'
      'traceback.print_stack(file=sys.stderr)\n'
      'sys.stderr.write("tensorflow was imported\\n"); sys.stderr.flush(); os._exit(99)\n')
  result = run_cli('fashion_mnist.py', tmp_path / 'run',
                   {**TINY, 'max_steps': 4, 'write_plots': True},
                   env={'PYTHONPATH': f'{tmp_path / "site"}{os.pathsep}{REPO}',
                        'TF_CPP_MIN_LOG_LEVEL': ''})
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr == '', result.stderr[-3000:]
  assert 'final test accuracy' in result.stdout
  assert (tmp_path / 'run' / 'curves.png').exists()
