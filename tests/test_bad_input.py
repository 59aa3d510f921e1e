"""Bad input is refused with a message that says what is wrong, before anything is
compiled, and the user never sees a Python traceback.

Flags and files go through the real command line in a subprocess; values that
are pure config go through `validate`, which the command line runs first.
"""

import os
import subprocess

import pytest

from conftest import TINY, run_cli
from nin_jax import config as config_lib


def refused(proc, message, *, status=2):
  """The run ended with `message` on stderr, before any training step."""
  assert proc.returncode == status, proc.stderr[-3000:]
  assert message in proc.stderr, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert 'step 1/' not in proc.stdout and 'params,' not in proc.stdout  # Nothing built.


@pytest.fixture
def a_file(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('not a directory\n')
  return path


# (name, how to build the command from tmp_path and a_file, expected message)
CLI_CASES = {
    'unknown config key': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {}, ['--config.model.widht_multiplier=2']),
        'error: bad --config override: \'widht_multiplier\' Did you mean "width_multiplier"'),
    'negative learning rate': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'optim.learning_rate': -0.1}, []),
        'error: config.optim.learning_rate=-0.1: must be positive'),
    'dropout rate out of range': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'model.dropout_rate': 1.5}, []),
        'error: config.model.dropout_rate=1.5: must be in [0, 1)'),
    'unknown dataset name': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'dataset.name': 'imagenet21k'}, []),
        "error: config.dataset.name='imagenet21k': unknown dataset; choose one of"),
    'preset that cannot pool 28x28 down': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'model.preset': 'imagenet'}, []),
        "error: config.model.preset='imagenet' does not fit config.dataset.name="
        "'fashion_mnist' (28×28 images): input (28, 28, 1) is too small for imagenet"),
    'batch larger than the dataset': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w',
                        {**TINY, 'dataset.train_subset': 100, 'optim.batch_size': 128}, []),
        'error: config.optim.batch_size=128 is larger than the 100 training images'),
    'workdir is a file': (
        lambda tmp, f: ('fashion_mnist.py', f, TINY, []),
        'is a file, not a directory'),
    'workdir cannot be created': (
        lambda tmp, f: ('fashion_mnist.py', f / 'sub', TINY, []),
        'sub: Not a directory'),
    'config file does not exist': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {}, [f'--config={tmp}/nope.py']),
        'nope.py: [Errno 2] No such file or directory'),
    'config file without get_config': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {}, [f'--config={f}.py']),
        'a_file.py defines no get_config() function'),
    'IDX dataset directory missing': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'dataset.idx_dir': '/nonexistent'}, []),
        "error: IDX directory '/nonexistent' does not exist; install the files"),
    'TFDS dataset not prepared': (
        lambda tmp, f: ('cifar10.py', tmp / 'w', {**TINY, 'dataset.data_dir': str(tmp)}, []),
        "error: dataset 'cifar10' is not prepared in"),
    'config file does not exist, with overrides': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {'num_epochs': 2.0}, [f'--config={tmp}/nope.py']),
        'nope.py: [Errno 2] No such file or directory'),
    'config file with a syntax error': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {}, [f'--config={tmp}/broken.py']),
        'broken.py, line 3: syntax error: '),
    'config path is a directory': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {'num_epochs': 2.0}, [f'--config={tmp}']),
        'it is a directory; name a .py file with a get_config() function'),
    'config file sets an unknown key': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {}, [f'--config={tmp}/typo.py']),
        'error: config.optim.learnin_rate is not a config field; did you mean '
        'optim.learning_rate?'),
    'train subset larger than the split': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'dataset.train_subset': 100000}, []),
        'error: config.dataset.train_subset=100000 is larger than the 60000 images of the '
        'fashion_mnist train split'),
    'checkpoints path is a file': (
        lambda tmp, f: ('fashion_mnist.py', f.parent, TINY, []),
        'checkpoints is a file, not a checkpoint directory'),
}


@pytest.mark.parametrize('case', CLI_CASES, ids=lambda c: c.replace(' ', '_'))
def test_cli_refuses_bad_input_cleanly(tmp_path, a_file, case):
  build, message = CLI_CASES[case]
  script, workdir, overrides, extra = build(tmp_path, a_file)
  if case == 'config file without get_config':
    (tmp_path / 'a_file.py').write_text('"""A config file someone forgot to finish."""\n')
  if case == 'checkpoints path is a file':
    a_file.rename(tmp_path / 'checkpoints')
    message = f'{tmp_path}/{message}'
  if case == 'TFDS dataset not prepared':
    message += f' {tmp_path}. Run `tfds build cifar10 --data_dir={tmp_path}`'
  if case == 'config file with a syntax error':
    (tmp_path / 'broken.py').write_text('def get_config():\n  config = dict(\n  return config)\n')
  if case == 'config file sets an unknown key':
    (tmp_path / 'typo.py').write_text(
        'from nin_jax.configs import fashion_mnist\n\n'
        'def get_config():\n  config = fashion_mnist.get_config()\n'
        '  config.optim.learnin_rate = 0.001\n  return config\n')
  refused(run_cli(script, workdir, overrides, extra_args=extra), message)
  if workdir != a_file and workdir != a_file.parent:
    assert not workdir.exists()  # A refused run leaves no workdir behind.


def test_cli_refuses_wrong_type_and_stray_arguments(tmp_path):
  # absl's own flag errors: exit status 1 and a one-line reason, no traceback.
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', extra_args=['--config.optim.learning_rate=fast'])
  refused(proc, "could not convert string to float: 'fast'", status=1)
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', TINY, extra_args=['stray'])
  refused(proc, "unexpected arguments: ['stray']", status=1)
  assert not (tmp_path / 'w').exists()


def test_batch_not_divisible_by_devices_is_refused(tmp_path):
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', {**TINY, 'eval_batch_size': 100}, devices=8)
  refused(proc, 'error: eval_batch_size=100 does not divide across the 8 devices of '
                'this run; use a multiple of 8')


def test_broken_link_as_checkpoint_directory_is_refused(tmp_path):
  # What an unmounted network volume looks like. (Permission bits cannot be
  # tested here: the test machine runs as root.)
  (tmp_path / 'w').mkdir()
  os.symlink('/nonexistent/volume', tmp_path / 'w' / 'checkpoints')
  refused(run_cli('fashion_mnist.py', tmp_path / 'w', TINY),
          'links to /nonexistent/volume, which does not exist (storage not mounted?)')


@pytest.mark.parametrize('field, value, message', [
    ('optim.learning_rate', 0.0, 'must be positive'),
    ('optim.batch_size', 0, 'must be positive'),
    ('optim.momentum', 1.0, 'must be in [0, 1)'),
    ('model.preset', 'resnet50', 'unknown preset; choose one of'),
    ('model.width_multiplier', -1.0, 'must be positive'),
    ('model.fc_hidden', (64, 0), 'hidden widths must be positive'),
    ('dataset.source', 'hdf5', "choose 'tfds' or 'idx'"),
    ('augment.translate', -2, 'must be >= 0 pixels'),
    ('optim.decay_epochs', (230.0, 200.0), 'must be increasing'),
    ('max_steps', -5, 'must be >= 0 (0 = no limit)'),
    ('keep_checkpoints', 0, 'must be >= 1'),
    ('checkpoint_every_steps', 0, 'must be positive'),
    ('testing.inject_nan_at_step', -1, 'must be >= 0 (0 = off)'),
])
def test_validate_names_the_field_and_the_rule(field, value, message):
  config = config_lib.base_config()
  *parents, leaf = field.split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  assert str(error.value).startswith(f'config.{field}={value!r}: {message}')


def test_full_disk_is_one_line_naming_the_path_and_the_free_space(tmp_path):
  # A 256 KiB tmpfs (the test machine runs as root): the first checkpoint
  # (~190 KiB) or the second cannot be written.
  disk = tmp_path / 'disk'
  disk.mkdir()
  subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(disk)], check=True)
  try:
    proc = run_cli('fashion_mnist.py', disk / 'w', {**TINY, 'max_steps': 8})
  finally:
    subprocess.run(['umount', str(disk)], check=True)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert f'error: no space left on the device of {disk}/w (' in proc.stderr, proc.stderr[-3000:]
  assert 'KiB free); free some space or use another --workdir' in proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert len(proc.stderr.splitlines()) <= 3, proc.stderr[-3000:]
