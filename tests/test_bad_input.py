"""Bad input is refused with a message that says what is wrong, before anything is
compiled, and the user never sees a Python traceback.

Flags and files go through the real command line in a subprocess; values that
are pure config go through `validate`, which the command line runs first.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import caffe_writer
from conftest import REPO, TINY, run_cli
from nin_jax.train import config as config_lib


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
        'error: bad flag or --config override: \'widht_multiplier\' Did you mean '
        '"width_multiplier"'),
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
        # Not /nonexistent: a process whose HOME is that (SLURM's nobody) may create it.
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'dataset.idx_dir': f'{tmp}/none'}, []),
        "/none' does not exist; install the files"),
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
    'config file whose import fails': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {}, [f'--config={tmp}/bad_import.py']),
        "bad_import.py, line 2: ModuleNotFoundError: No module named 'no_such_module'"),
    'config file whose get_config raises': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {'num_epochs': 2.0},
                        [f'--config={tmp}/raises.py']),
        "raises.py, line 5, in get_config: ValueError: invalid literal for int() with base "
        "10: 'sixty-four'"),
    'profile range after the run': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', TINY, ['--profile_steps=100:105']),
        'error: --profile_steps=100:105: the run has 16 steps (0 to 15); choose A:B with '
        'B <= 16'),
    'profile range past the run\'s end': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', TINY, ['--profile_steps=10:30']),
        'error: --profile_steps=10:30: the run has 16 steps (0 to 15); choose A:B with B <= 16'),
    'profile range past max_steps': (
        lambda tmp, f: ('fashion_mnist.py', tmp / 'w', {**TINY, 'max_steps': 4},
                        ['--profile_steps=2:6']),
        'error: --profile_steps=2:6: the run has 4 steps (0 to 3); choose A:B with B <= 4'),
}

# The config files of the cases above that need one, by the file's name.
CONFIG_FILES = {
    'typo.py': ('from nin_jax.configs import fashion_mnist\n\n'
                'def get_config():\n  config = fashion_mnist.get_config()\n'
                '  config.optim.learnin_rate = 0.001\n  return config\n'),
    'bad_import.py': '"""Needs a module that is not installed."""\nimport no_such_module\n\n'
                     'def get_config():\n  return no_such_module.config()\n',
    'raises.py': ('from nin_jax.configs import fashion_mnist\n\n'
                  'def get_config():\n  config = fashion_mnist.get_config()\n'
                  "  config.optim.batch_size = int('sixty-four')\n  return config\n"),
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
  for name, text in CONFIG_FILES.items():
    (tmp_path / name).write_text(text)
  refused(run_cli(script, workdir, overrides, extra_args=extra), message)
  if workdir != a_file and workdir != a_file.parent:
    assert not workdir.exists()  # A refused run leaves no workdir behind.


@pytest.mark.core
def test_cli_refuses_wrong_type_and_stray_arguments(tmp_path):
  # A value absl cannot convert: the one error line of every bad flag, exit status 2.
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', extra_args=['--config.optim.learning_rate=fast'])
  refused(proc, "error: bad flag or --config override: flag --config.optim.learning_rate=fast: "
                "could not convert string to float: 'fast'")
  # A stray argument is absl's usage error: the usage, then the reason, exit status 1.
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', TINY, extra_args=['stray'])
  refused(proc, "unexpected arguments: ['stray']", status=1)
  assert not (tmp_path / 'w').exists()


@pytest.mark.core
def test_batch_not_divisible_by_devices_is_refused(tmp_path):
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', {**TINY, 'eval_batch_size': 100}, devices=8)
  refused(proc, 'error: eval_batch_size=100 does not divide across the 8 devices of '
                'this run; use a multiple of 8')


@pytest.mark.core
def test_broken_link_as_checkpoint_directory_is_refused(tmp_path):
  # What an unmounted network volume looks like. (Permission bits cannot be
  # tested here: the test machine runs as root.)
  (tmp_path / 'w').mkdir()
  os.symlink(tmp_path / 'unmounted' / 'volume', tmp_path / 'w' / 'checkpoints')
  refused(run_cli('fashion_mnist.py', tmp_path / 'w', TINY),
          f'links to {tmp_path}/unmounted/volume, which does not exist (storage not mounted?)')


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
@pytest.mark.core
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


def one_line_refusal(proc, message):
  """`refused`, and the message is all of stderr: one line, nothing quoted twice."""
  refused(proc, message)
  assert proc.stderr.count('\n') == 1 and proc.stderr.startswith('error: '), proc.stderr
  assert '\\' not in proc.stderr, proc.stderr  # No repr escapes (\' or a literal \n).


def test_print_config_runs_the_checks_training_runs(tmp_path):
  (tmp_path / 'typo.py').write_text(CONFIG_FILES['typo.py'])
  proc = run_cli('fashion_mnist.py', None, extra_args=[f'--config={tmp_path}/typo.py',
                                                       '--print_config'])
  one_line_refusal(proc, 'error: config.optim.learnin_rate is not a config field; did you '
                         'mean optim.learning_rate?')
  assert proc.stdout == ''


@pytest.mark.parametrize('script, config', [('sweep.py', ['--config=fashion_mnist']),
                                            ('ablation_head.py', [])])
def test_sweep_and_ablation_print_a_misspelt_override_cleanly(tmp_path, script, config):
  proc = run_cli(script, tmp_path / 'w', extra_args=[
      *config, '--config.optim.learnin_rate=0.1', '--dry_run'])
  one_line_refusal(proc, 'error: bad flag or --config override: \'learnin_rate\' Did you '
                         'mean "learning_rate" instead of "learnin_rate"?')


@pytest.mark.parametrize('script, config', [('fashion_mnist.py', []),
                                            ('sweep.py', ['--config=fashion_mnist']),
                                            ('ablation_head.py', [])])
def test_every_command_refuses_an_unknown_flag_in_the_same_one_line(tmp_path, script, config):
  proc = run_cli(script, tmp_path / 'w', extra_args=[*config, '--no_such_flag=1', '--dry_run'])
  one_line_refusal(proc, "error: bad flag or --config override: Unknown command line flag "
                         "'no_such_flag'")


SWEEP_RAISES = ('from nin_jax.configs.fashion_mnist import get_config\n\n'
                'def sweep():\n  seeds = {"first": 0}\n  return [{"seed": seeds["second"]}]\n')


@pytest.mark.parametrize('script, file, message', [
    ('sweep.py', 'raises.py', "raises.py, line 5, in get_config: ValueError: invalid literal "
                              "for int() with base 10: 'sixty-four'"),
    ('ablation_head.py', 'raises.py', 'raises.py, line 5, in get_config: ValueError: '),
    ('sweep.py', 'sweep_raises.py', "sweep_raises.py, line 5, in sweep: KeyError: 'second'"),
])
def test_sweep_and_ablation_refuse_a_config_file_that_fails_in_one_line(
    tmp_path, script, file, message):
  (tmp_path / file).write_text({**CONFIG_FILES, 'sweep_raises.py': SWEEP_RAISES}[file])
  proc = run_cli(script, tmp_path / 'w', extra_args=[f'--config={tmp_path}/{file}', '--dry_run'])
  one_line_refusal(proc, f'error: config file {tmp_path}/{message}')


@pytest.mark.parametrize('command, own_flags', [
    ('sweep', ['--[no]dry_run', '--metric', '--[no]report_only', '--trainer', '--workdir']),
    ('ablation', ['--fc_dropout', '--seeds', '--[no]dry_run', '--workdir'])])
def test_console_scripts_help_describes_the_command_and_its_flags(command, own_flags):
  # As the console script nin-sweep runs it: a __main__ without a docstring.
  code = f'import sys\nfrom nin_jax.cli.entry import {command}\nsys.exit({command}())\n'
  proc = subprocess.run([sys.executable, '-c', code, '--help'], capture_output=True,
                        text=True, env={**os.environ, 'PYTHONPATH': REPO}, timeout=300)
  assert f'nin-{command}: ' in proc.stdout.splitlines()[0], proc.stdout
  assert 'Ctrl-C' in proc.stdout  # The description says how to stop it.
  for flag in own_flags:
    assert f'  {flag}: ' in proc.stdout, (flag, proc.stdout)


# --- The Caffe zoo converter (experiments/eval_pretrained.py) ---------------------

def zoo_params():
  from flax import nnx
  from nin_jax.train import train_step
  model_config = config_lib.base_config().model
  model_config.preset, model_config.width_multiplier = 'imagenet', 0.125
  model = train_step.build_model(model_config, 1000, (224, 224, 3), seed=0)
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def eval_pretrained(tmp_path, caffemodel):
  return subprocess.run(
      [sys.executable, f'{REPO}/experiments/eval_pretrained.py', f'--caffemodel={caffemodel}',
       f'--workdir={tmp_path / "zoo"}', '--width_multiplier=0.125'],
      capture_output=True, text=True, timeout=600, cwd=REPO,
      env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})


def test_a_caffemodel_with_a_field_of_the_wrong_wire_type_is_one_line(tmp_path):
  # A ReLU layer whose type (a string) is stored as a varint.
  data = caffe_writer.net(zoo_params(), bgr=True) + caffe_writer.bytes_field(
      100, caffe_writer.bytes_field(1, b'relu_extra') + caffe_writer.int_field(2, 18))
  (tmp_path / 'bad.caffemodel').write_bytes(data)
  proc = eval_pretrained(tmp_path, tmp_path / 'bad.caffemodel')
  one_line_refusal(proc, 'error: the type of layer relu_extra is stored as a varint, where '
                         'caffe.proto has length-delimited bytes: a damaged file')
  assert not (tmp_path / 'zoo').exists()


def test_a_caffemodel_with_nan_or_inf_weights_is_one_line(tmp_path):
  params = zoo_params()
  kernel = np.array(params['blocks'][1]['layers'][0]['kernel'])
  kernel[0, 0, 0, :2] = [np.nan, np.inf]
  params['blocks'][1]['layers'][0]['kernel'] = kernel
  (tmp_path / 'nan.caffemodel').write_bytes(caffe_writer.net(params, bgr=True))
  proc = eval_pretrained(tmp_path, tmp_path / 'nan.caffemodel')
  one_line_refusal(proc, 'error: layer conv2: a blob of shape (32, 12, 5, 5) holds 2 NaN or '
                         'Inf values: a damaged file')
  assert not (tmp_path / 'zoo').exists()


# --- The predictor (nin_jax/train/predict.py) ----------------------------------------------

def test_the_predictor_takes_single_channel_images_with_or_without_their_channel_axis(
    trained_tiny_run):
  from nin_jax.data import datasets
  from nin_jax.train import predict
  predictor = predict.load(str(trained_tiny_run[0]))
  raw, _ = datasets.load_arrays('fashion_mnist', 'test', source='idx')
  batch = np.asarray(raw[:3]).reshape(3, 28, 28, 1)
  expected = predictor(batch)
  np.testing.assert_array_equal(predictor(batch[:, :, :, 0]), expected)  # IDX's (N, H, W)
  np.testing.assert_array_equal(predictor(batch[0, :, :, 0]), expected[:1])  # (H, W)
  np.testing.assert_array_equal(predictor(batch[0]), expected[:1])  # (H, W, C)
  needs = ('this model takes (28, 28, 1) images: a batch (N, 28, 28, 1) or one (28, 28, 1), '
           'or without the channel axis, (N, 28, 28) or (28, 28)')
  for shape in [(28,), (32, 32), (2, 28, 28, 3), (2, 1, 28, 28)]:
    with pytest.raises(ValueError) as error:
      predictor(np.zeros(shape, np.uint8))
    assert str(error.value) == f'images of shape {shape}; {needs}'
