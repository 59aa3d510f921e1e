"""The console scripts besides `nin-train` (nin_jax.cli.train_command): sweep, ablation, benchmark, class maps.

Installed as `nin-sweep`, `nin-ablation`, `nin-benchmark` and `nin-classmap`;
experiments/sweep.py, ablation_head.py, benchmark.py and classmap.py call the
same functions. Each defines its flags only when it runs, so one process
never holds two commands' flags.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import shlex
import sys
from typing import Any, Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from nin_jax import configs
from nin_jax.cli import errors
from nin_jax.research import ablation as ablation_lib
from nin_jax.research import sweep_report
from nin_jax.research import sweeps
from nin_jax.research import trial_group
from nin_jax.research import trials

FLAGS = flags.FLAGS
# A clone's experiments/ (one training script per config); absent when installed.
EXPERIMENTS_DIR = os.path.normpath(os.path.join(configs.DIRECTORY, os.pardir, os.pardir,
                                               'experiments'))


def default_trainer(config_path: str) -> str:
  """The script each trial runs: experiments/<config name>.py in a clone, else nin-train.

  Every training script takes the same flags (--config is always passed), so
  any of them trains any config.
  """
  if not os.path.isdir(EXPERIMENTS_DIR):
    return os.path.join(os.path.dirname(sys.executable), 'nin-train')
  own = os.path.join(EXPERIMENTS_DIR, os.path.basename(config_path))
  return own if os.path.isfile(own) else os.path.join(EXPERIMENTS_DIR, 'fashion_mnist.py')


def _trainer_flag() -> None:
  flags.DEFINE_string('trainer', '', 'Training script each run uses (default: '
                      'experiments/<config name>.py in a clone, else nin-train).')


def _parallel_flag() -> None:
  flags.DEFINE_integer('parallel', 1, 'Train up to this many trials that share a program '
                       '(differing only in learning rate, schedule, weight decay, momentum, '
                       'dropout rate, label smoothing, seed) side by side in one process '
                       'from one compiled step; 1: one process per trial.', lower_bound=1)


def sweep() -> None:
  """nin-sweep: runs a config's sweep(), one ordinary training run per trial, then
  tables and plots the results.

      nin-sweep --config=fashion_mnist --workdir=workdirs/sweep_fmnist \\
          [--config.num_epochs=2] [--dry_run] [--metric=val/accuracy] [--report_only]

  The config file defines sweep() (nin_jax/research/sweeps.py); every --config.* flag
  applies to every trial. Trials are ranked and chosen on validation images held
  out of training: a tenth of the training split unless the trials hold out some
  (--config.dataset.validation_per_class_train=N); the table shows each trial's
  test metric beside. Ranking on test takes --metric=test/accuracy --select_on_test. Trials live in <workdir>/trial_<i>_<key=value...>/;
  rerunning skips finished trials and resumes an interrupted one. Ctrl-C: the
  running trial saves a checkpoint and the sweep stops (exit status 130); a
  second Ctrl-C stops at once. --parallel=K: up to K trials that differ only in
  runtime hyperparameters (learning rate, schedule, weight decay, momentum,
  dropout rate, label smoothing, seed) train side by side in one process.
  """
  def define_flags():
    config_flags.DEFINE_config_file('config', None, 'Config file with get_config() and sweep().',
                                    lock_config=True)
    flags.DEFINE_string('workdir', None, 'Sweep directory (local or gs://); one '
                        'subdirectory per trial.')
    flags.DEFINE_string('metric', 'val/accuracy', 'Metric to rank, choose and plot by: a '
                        'validation metric (val/*); a test metric needs --select_on_test.')
    flags.DEFINE_bool('select_on_test', False, 'Rank and choose on a test metric '
                      '(--metric=test/...); the table says so.')
    flags.DEFINE_bool('dry_run', False, 'Print every trial command; run nothing.')
    flags.DEFINE_bool('report_only', False, 'Only (re)write the table and plot from workdir.')
    _trainer_flag()
    _parallel_flag()
    flags.mark_flag_as_required('workdir')

  def run() -> int:
    config_path = config_flags.get_config_filename(FLAGS['config']) if FLAGS.config else None
    return run_sweep(
        config=FLAGS.config, config_path=config_path, workdir=FLAGS.workdir,
        argv=sys.argv[1:], metric=FLAGS.metric, select_on_test=FLAGS.select_on_test,
        dry_run=FLAGS.dry_run, report_only=FLAGS.report_only, parallel=FLAGS.parallel,
        trainer=FLAGS.trainer or default_trainer(config_path or ''))

  sys.argv[1:] = configs.expand_names(sys.argv[1:])
  _run_command(define_flags, run, 'trial', default_config=None, usage=sweep.__doc__)


def run_sweep(*, config, config_path: str | None, workdir: str, argv: Sequence[str],
              trainer: str, metric: str, dry_run: bool, report_only: bool,
              select_on_test: bool = False, parallel: int = 1, stream=sys.stdout) -> int:
  """Dry-runs, runs or reports a sweep; returns the number of trials not done."""
  sweep_report.check_ranking(metric, select_on_test)  # Before any trial runs.
  write_report = functools.partial(sweep_report.write_report, workdir, metric, select_on_test)
  if report_only:
    return run_and_report(None, write_report, dry_run=False, stream=stream)
  if config is None or not config_path:
    raise sweeps.SweepError('--config is required (unless --report_only)')
  base_args = trials.base_override_args(argv)
  overrides = sweeps.load_sweep(config_path)
  for trial in overrides:  # Every key and type checked before any trial runs.
    sweeps.apply_overrides(config, trial)
  if metric.startswith(sweep_report.VALIDATION):
    base_args += _hold_out_validation(config, overrides, dry_run=dry_run, stream=stream)
  trial_list = trials.make_trials(
      overrides, workdir,
      lambda wd, o: trials.trial_command(trainer, config_path, wd, base_args, o))
  return run_and_report(trial_list, write_report, base_args=base_args, dry_run=dry_run,
                        stream=stream, parallel=_Parallel(parallel, config, config_path, trainer))


def _hold_out_validation(config, overrides: Sequence[dict], *, dry_run: bool,
                         stream) -> list[str]:
  """The flag that holds out every trial's validation images, said aloud; [] if they have one."""
  held = sweeps.validation_holdout(config, overrides)
  if not held:
    return []
  (key, per_class), = held.items()
  flag = f'--config.{key}={per_class}'
  note = (f'choosing on validation data: every trial holds out {per_class} training images '
          f'per class ({flag}, a tenth of the training split); set that flag to change it, '
          'or rank on test with --metric=test/accuracy --select_on_test')
  print(('# ' if dry_run else '') + note, file=stream, flush=True)  # A comment in a script.
  return [flag]


@dataclasses.dataclass(frozen=True)
class _Parallel:
  """--parallel=K: up to K trials sharing a program train in one process
  (nin_jax/research/trial_group.py); the config and trainer they share."""
  k: int
  config: Any
  config_path: str
  trainer: str


def run_and_report(trial_list: Sequence[trials.Trial] | None, write_report: Callable[[], dict],
                   *, base_args: Sequence[str] = (), dry_run: bool, stream,
                   parallel: _Parallel | None = None) -> int:
  """Prints the trials' commands (dry_run), or runs them (None: none) and prints the report.

  Returns how many trials did not finish.
  """
  if dry_run:
    for t in trial_list:
      print(shlex.join(t.command), file=stream)
    return 0
  statuses = {}
  if trial_list is not None:
    if parallel is not None and parallel.k > 1:
      statuses = trial_group.run_trials(
          trial_list, config=parallel.config, parallel=parallel.k, trainer=parallel.trainer,
          config_path=parallel.config_path, base_args=base_args, stream=stream)
    else:
      statuses = trials.run_trials(trial_list, base_args=base_args, stream=stream)
  paths = write_report()
  print(paths['md'].read_text(), file=stream)
  print('wrote ' + ', '.join(map(str, paths.values())), file=stream)
  return sum(s != trials.DONE for s in statuses.values())


def ablation() -> None:
  """nin-ablation: the paper's head ablation (section 4.6), GAP vs FC vs FC + dropout,
  on one config, each variant an ordinary training run.

      nin-ablation --workdir=workdirs/ablation_head [--config=cifar10_noaug] \\
          [--config.a.b=value ...] [--seeds=0,1,2] [--fc_dropout=0.5] [--dry_run] \\
          [--report_only]

  Each variant (x each seed) runs in its own subdirectory (rerun to resume or
  skip); the table goes to ablation.md/.csv, the plots to ablation_errors.png
  and ablation_curves.png. Ctrl-C: the running variant saves a checkpoint and
  the ablation stops (exit status 130); a second Ctrl-C stops at once.
  """
  default_config = configs.path('fashion_mnist')

  def define_flags():
    config_flags.DEFINE_config_file(
        'config', default_config,
        'Config of the network to ablate (--config=cifar10_noaug for the paper).',
        lock_config=True)
    flags.DEFINE_string('workdir', None, 'Ablation directory (local or gs://); one '
                        'subdirectory per trial.')
    flags.DEFINE_list('seeds', [], 'Seeds to run every variant with (a sweep axis over '
                      'config.seed); empty: the config\'s seed only.')
    flags.DEFINE_float('fc_dropout', 0.5, 'Dropout on the FC head inputs in the third variant.')
    flags.DEFINE_bool('dry_run', False, 'Print the three commands; run nothing.')
    flags.DEFINE_bool('report_only', False, 'Only (re)write the table and plot from workdir.')
    _trainer_flag()
    _parallel_flag()
    flags.mark_flag_as_required('workdir')

  def run() -> int:
    _jax_on_cpu_only()  # The report builds each variant's model to count its parameters.
    config_path = config_flags.get_config_filename(FLAGS['config'])
    return run_ablation(
        config=FLAGS.config, config_path=config_path, workdir=FLAGS.workdir,
        argv=sys.argv[1:], fc_dropout=FLAGS.fc_dropout, dry_run=FLAGS.dry_run,
        report_only=FLAGS.report_only, seeds=seeds(), parallel=FLAGS.parallel,
        trainer=FLAGS.trainer or default_trainer(config_path))

  def seeds() -> list[int]:
    try:
      return [int(s) for s in FLAGS.seeds]
    except ValueError:
      raise sweeps.SweepError(f'--seeds takes integers, got {",".join(FLAGS.seeds)}') from None

  sys.argv[1:] = configs.expand_names(sys.argv[1:])
  _run_command(define_flags, run, 'variant', default_config=default_config,
               usage=ablation.__doc__)


def run_ablation(*, config, config_path: str, workdir: str, argv: Sequence[str], trainer: str,
                 fc_dropout: float, dry_run: bool, report_only: bool,
                 seeds: Sequence[int] = (), parallel: int = 1, stream=sys.stdout) -> int:
  """Dry-runs, runs or reports the head ablation; returns the number of trials not done.

  It chooses nothing: every variant trains on the training split and reports
  its test error, as the paper did.
  """
  write_report = functools.partial(ablation_lib.write_report, workdir)
  if report_only:
    return run_and_report(None, write_report, dry_run=False, stream=stream)
  base_args = trials.base_override_args(argv)
  trial_list = ablation_lib.make_trials(config, config_path, workdir, trainer, base_args,
                                        fc_dropout, seeds)
  return run_and_report(trial_list, write_report, base_args=base_args, dry_run=dry_run,
                        stream=stream, parallel=_Parallel(parallel, config, config_path, trainer))


def _jax_on_cpu_only() -> None:
  """JAX in this process uses the CPU alone, unless JAX_PLATFORMS says otherwise.

  For a runner whose trials are processes of their own: what it computes
  itself (shapes, parameter counts) needs no accelerator, and probing for one
  would log "Unable to initialize backend 'tpu'" (or hold a TPU a trial needs).
  """
  if not os.environ.get('JAX_PLATFORMS'):
    import jax
    jax.config.update('jax_platforms', 'cpu')


def _run_command(define_flags: Callable[[], None], run: Callable[[], int],
                 unit: str, *, default_config: str | None, usage: str) -> None:
  """The __main__ of nin-sweep and nin-ablation (and experiments/sweep.py, ablation_head.py).

  Checks the config file, defines the flags, runs `run()` (which returns how
  many `unit`s did not finish), and turns user errors into one `error: …`
  line with exit status 2. A signal that stopped the trials is one line too:
  exit status 130 for Ctrl-C, 1 for SIGTERM (not every trial is done).
  """
  from nin_jax.cli import train_command as cli
  errors.check_config_file(sys.argv, default_config)
  _define_flags_with_help(define_flags, usage)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    cli.library_logs_at_warning()
    try:
      not_done = run()
    except (sweeps.SweepError, *errors.USER_ERRORS) as e:
      errors.fail(str(e))
    except trials.Stopped as e:
      print(e, flush=True)
      sys.exit(130 if e.signal_name == 'SIGINT' else 1)
    except KeyboardInterrupt:  # Ctrl-C while no trial runs (e.g. writing the report).
      print('interrupted; rerun the same command to resume', flush=True)
      sys.exit(130)
    if not_done:
      print(f'{not_done} {unit}(s) failed or did not finish; rerun the same command to retry.')
      sys.exit(1)
  app.run(main, flags_parser=errors.parse_flags)


def _define_flags_with_help(define_flags: Callable[[], None], usage: str) -> None:
  """Defines the command's flags; `--help` then lists them under `usage`.

  absl's --help shows __main__'s docstring and the main module's flags; a
  console script (nin-sweep) has neither, so both are given here. A bad
  --config override (config_flags applies it while defining) is one line.
  """
  before = set(FLAGS)
  errors.define_flags(define_flags)
  for name in sorted(set(FLAGS) - before):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
  main_module = sys.modules['__main__']
  if not main_module.__doc__:
    main_module.__doc__ = inspect.cleandoc(usage) + '\n'


def benchmark() -> None:
  """nin-benchmark: throughput and MFU of a config's train step, optionally against PyTorch."""
  config_flags.DEFINE_config_file(
      'config', configs.path('cifar10'), 'Config whose model and batch size are measured.',
      lock_config=True)
  flags.DEFINE_integer('steps', 10, 'Timed steps (median reported).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_float('peak_tflops', 0.0, 'Peak TFLOP/s of one device for MFU (0: skip).')
  flags.DEFINE_bool('compare_torch', False, 'Also time the PyTorch peer (nin_jax/research/torch_nin.py).')
  flags.DEFINE_integer('torch_threads', 0, 'Threads for PyTorch (0: its default).')
  flags.DEFINE_string('torch_device', 'cpu', "PyTorch device: 'cpu' or 'cuda'.")
  flags.DEFINE_bool('torch_compile', False, 'torch.compile the peer.')
  flags.DEFINE_bool('host_overhead', False,
                    "Time the real loop against the compiled step for k = 1, 8, 32 "
                    "steps per dispatch (the config's dataset, held on device).")
  flags.DEFINE_string('output', '', 'Also write the result as JSON here.')
  flags.DEFINE_string('profile_steps', '', 'A:B traces steps A to B-1 after compilation '
                      '(warmup steps first) with jax.profiler.')
  flags.DEFINE_string('profile_dir', 'workdirs/benchmark/profile',
                      'Where --profile_steps writes (tensorboard --logdir <it>).')

  def main(argv):
    del argv
    from nin_jax.research import throughput
    from nin_jax.cli import train_command as cli
    from nin_jax.runtime import profiling
    cli.library_logs_at_warning()
    if FLAGS.host_overhead:
      rows = throughput.host_overhead(FLAGS.config)
      print(throughput.format_overhead(rows))
      print(json.dumps(rows))
      return
    result = throughput.compare(
        FLAGS.config, steps=FLAGS.steps, warmup=FLAGS.warmup,
        peak_tflops=FLAGS.peak_tflops, compare_torch=FLAGS.compare_torch,
        torch_threads=FLAGS.torch_threads, torch_device=FLAGS.torch_device,
        torch_compile=FLAGS.torch_compile,
        profile_steps=profiling.parse_steps(FLAGS.profile_steps), profile_dir=FLAGS.profile_dir)
    print(throughput.format_report(result))
    print(json.dumps(result))
    if FLAGS.output:
      with open(FLAGS.output, 'w') as f:
        json.dump(result, f, indent=2)

  sys.argv[1:] = configs.expand_names(sys.argv[1:])
  app.run(main)


def classmap() -> None:
  """nin-classmap: the class maps of a trained run (the paper's figure 4)."""
  flags.DEFINE_string('workdir', None, 'Workdir of a trained run (config.json + checkpoints/).')
  flags.DEFINE_list('images', ['0', '1', '2', '3'], 'Test image indices, comma-separated.')
  flags.DEFINE_integer('top_k', 3, 'Maps of this many most probable classes per image.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.DEFINE_string('out', None, 'PNG path (default: <workdir>/class_maps.png).')
  flags.mark_flag_as_required('workdir')

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    from nin_jax.research import classmap as classmap_lib  # After flag parsing: --help stays fast.
    try:
      indices = [int(i) for i in FLAGS.images]
      path, result = classmap_lib.make_figure(FLAGS.workdir, FLAGS.out, indices=indices,
                                              top_k=FLAGS.top_k, step=FLAGS.step)
    except errors.USER_ERRORS as e:
      errors.fail(str(e))
    print(f'wrote {path}: maps {result["maps"].shape[1:3]} for images {indices}')

  app.run(main)
