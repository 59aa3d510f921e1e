"""The command line every experiment script shares.

    nin-train --config=cifar10 --workdir=gs://bucket/nin --config.optim.learning_rate=0.05
    python experiments/cifar10.py --workdir=/tmp/nin        # the same, from a clone

`--config` names a config file or a shipped config (nin_jax/configs/; the
script's own by default); any field can be overridden with `--config.a.b=value`;
`--print_config` lists every field with its value and meaning, then exits.
Rerunning with the same --workdir resumes. User errors (a bad value, a missing
dataset, unreadable checkpoints) end with a
one-paragraph message and exit status 2, not a traceback.
"""

from __future__ import annotations

import os
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from nin_jax import configs
from nin_jax.cli import config_doc
from nin_jax.cli import errors
from nin_jax.runtime import accelerators
from nin_jax.runtime import metrics
from nin_jax.runtime import profiling
from nin_jax.train import run_history
from nin_jax.runtime import sharding
from nin_jax.runtime import storage
from nin_jax.train import config as config_lib

FLAGS = flags.FLAGS


def _define_flags(default_config: str) -> None:
  config_flags.DEFINE_config_file(
      'config', default_config,
      'Experiment config file (a get_config() module). Override any of its fields '
      'with --config.<field>=<value> (e.g. --config.optim.learning_rate=0.05); '
      '--print_config lists every field, its value and what it means.',
      lock_config=True)
  flags.DEFINE_bool('print_config', False,
                    'Print the resolved config (after --config.* overrides), each '
                    'field with its comment from nin_jax/train/config.py, and exit.')
  flags.DEFINE_string('workdir', None,
                      'Checkpoints, logs and plots go here; rerun with the same '
                      'workdir to resume. Default: workdirs/<config name>.')
  flags.DEFINE_string('coordinator_address', '',
                      'host:port of process 0, for multi-process runs that JAX '
                      'does not auto-detect (SLURM, Cloud TPU, Kubernetes and '
                      'JAX_COORDINATOR_ADDRESS are detected).')
  flags.DEFINE_integer('num_processes', 0, 'Processes in a multi-process run.')
  flags.DEFINE_integer('process_id', -1, 'This process in a multi-process run.')
  flags.DEFINE_string('compilation_cache_dir', os.path.join('~', '.cache', 'nin_jax', 'xla'),
                      "JAX's persistent compilation cache: a rerun or resume skips "
                      "recompiling ('' = off).")
  flags.DEFINE_bool('allow_config_change', False,
                    'Resume even though the config changes what a step means '
                    '(batch size, data, model...); the change is recorded in '
                    'the workdir\'s launches.jsonl.')
  flags.DEFINE_string('profile_steps', '',
                      'A:B traces steps A to B-1 with jax.profiler into <workdir>/profile '
                      '(open with `tensorboard --logdir <workdir>/profile`).')
  flags.DEFINE_integer('heartbeat_timeout_s', 0,
                       'Multi-process: seconds after which a dead peer stops the '
                       'others (0 = JAX default).')
  flags.DEFINE_bool('allow_cpu', False,
                    'Train on the CPU even though TPU chips or NVIDIA GPUs are '
                    'present (by default that stops the run: jax lacks their backend).')
  flags.DEFINE_multi_string('trial_workdir', [],
                            'Sweep trial directories (each with its overrides.json) to train '
                            'side by side in this process, in place of --workdir '
                            '(nin-sweep --parallel passes them).')
  # `--help` lists the main module's key flags: make these the script's own.
  for name in ('config', 'print_config', 'workdir', 'profile_steps', 'allow_config_change',
               'coordinator_address', 'num_processes', 'process_id', 'compilation_cache_dir', 'heartbeat_timeout_s',
               'allow_cpu'):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def run(default_config: str) -> None:
  """Entry point of experiments/*.py: parse flags, train, report."""
  sys.argv[1:] = configs.expand_names(sys.argv[1:])
  errors.check_config_file(sys.argv, default_config)
  errors.define_flags(lambda: _define_flags(default_config))
  app.run(_main, flags_parser=errors.parse_flags)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _loaded_config()
  if FLAGS.print_config:
    try:
      config_lib.validate(config)  # The checks training starts with.
    except ValueError as e:
      errors.fail(str(e))
    print(config_doc.format_config(
        config, config_flags.get_config_filename(FLAGS['config'])))
    return
  # Imported here so `--help` stays fast and TensorFlow starts after flag parsing.
  from nin_jax.train import loop as train
  library_logs_at_warning()
  if FLAGS.compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(FLAGS.compilation_cache_dir))
  workdir = FLAGS.workdir or os.path.join(
      'workdirs', os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS['config'])))[0])
  try:
    sharding.maybe_initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
        FLAGS.heartbeat_timeout_s)
    if not FLAGS.allow_cpu:  # Before any data is loaded.
      accelerators.check_backend(root=config.testing.hardware_root)
    if FLAGS.trial_workdir:
      return _train_group(config)
    result = train.train_and_evaluate(
        config, workdir, profile_steps=profiling.parse_steps(FLAGS.profile_steps),
        allow_config_change=FLAGS.allow_config_change)
  except KeyboardInterrupt:  # Ctrl-C outside the train loop (which saves first).
    print('interrupted; rerun the same command to resume from the last checkpoint',
          file=sys.stderr, flush=True)
    sys.exit(130)
  except errors.USER_ERRORS as e:
    errors.fail(str(e))
  except train.NonFiniteError as e:
    errors.fail(str(e), 3)
  except Exception as e:
    if sharding.is_multiprocess():  # Most likely a dead peer: say so, exit now.
      sharding.exit_after_failure(e)
    raise
  if result.get('preempted') and result.get('signal') == 'SIGINT':
    print(f'interrupted at step {result["step"]}; rerun the same command to resume')
    sys.exit(130)  # As a shell reports Ctrl-C: `nin-train … && next` stops here.
  elif result.get('preempted'):
    print(f'stopped at step {result["step"]} (preempted); rerun the same command to resume')
  elif 'test/accuracy' in result:
    print(f'final test accuracy {result["test/accuracy"]:.4f} '
          f'(error {100 * (1 - result["test/accuracy"]):.2f}%) after {result["step"]} steps;'
          f' workdir {storage.workdir_path(workdir)}')
    metrics.console(f'{run_history.wall_summary(workdir)} (python -m nin_jax.train.run_history '
                    f'{storage.workdir_path(workdir)} lists them)')


def _train_group(config) -> None:
  """--trial_workdir: the trials train side by side; exit 3 if any stopped on NaN/Inf."""
  # Beside the loop's import in _main: TensorFlow starts after flag parsing.
  from nin_jax.research import trial_group
  results = trial_group.train_group(
      trial_group.trial_configs(config, FLAGS.trial_workdir), FLAGS.trial_workdir,
      allow_config_change=FLAGS.allow_config_change)
  for r in results:
    if r['failed']:
      print(f'[{r["name"]}] failed at step {r["step"]}', flush=True)
    elif r['preempted']:
      print(f'[{r["name"]}] stopped at step {r["step"]}; rerun to resume', flush=True)
    else:
      print(f'[{r["name"]}] final test accuracy {r["test/accuracy"]:.4f} after '
            f'{r["step"]} steps', flush=True)
  if any(r['failed'] for r in results):
    sys.exit(3)
  if any(r['preempted'] and r['signal'] == 'SIGINT' for r in results):
    sys.exit(130)


def _loaded_config():
  """FLAGS.config, or a clear error if its file could not be loaded."""
  config = FLAGS.config
  if isinstance(config, ml_collections.ConfigDict):
    return config
  path = config_flags.get_config_filename(FLAGS['config'])
  try:
    getattr(config, 'keys', None)  # config_flags defers a load failure to first use.
  except OSError as e:
    reason = str(e).strip().splitlines()[-1].strip()  # e.g. "[Errno 2] No such file..."
    errors.fail(f'cannot load config file {path}: {reason}')
  errors.fail(f'get_config() in {path} returned {type(config).__name__}, not a '
              'ml_collections.ConfigDict')


def library_logs_at_warning() -> None:
  """absl's verbosity (Orbax's, JAX's, TF's logs) at WARNING unless --verbosity says.

  For entry points, after flag parsing: Orbax logs every save and restore at
  INFO, JAX its backend probing ("Unable to initialize backend 'tpu'"); the
  command's own lines are what matter.
  """
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
