"""Sweeps: trials are declared next to the config with grid/zip_/random, each runs as
an ordinary run in its own directory, finished trials are skipped on rerun, a
failing trial is recorded and does not stop the others, and the results come
out as a sorted Markdown/CSV table and a PNG. Trials are ranked and chosen on
validation images held out of training, by default; on test only when asked."""

import csv
import json
import os
import shlex
import sys

import ml_collections
import pytest

from conftest import REPO, TINY, make_tiny_config, run_cli
from nin_jax.cli import research_commands
from nin_jax.research import sweep_report
from nin_jax.research import sweeps
from nin_jax.research import trials

FASHION_CONFIG = os.path.join(REPO, 'nin_jax', 'configs', 'fashion_mnist.py')

def quickstart_sweep_config(sweep_returns: str) -> str:
  """A config file: the quickstart config, with `sweep()` returning `sweep_returns`."""
  return f'''
import importlib.util
from nin_jax.research import sweeps

_spec = importlib.util.spec_from_file_location('fashion_mnist', {FASHION_CONFIG!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
get_config = _base.get_config

def sweep():
  return {sweep_returns}
'''


# The quickstart config with a 4-trial sweep; the last trial's dropout rate is
# out of range, so its run fails as it starts (the sweep runner does not judge values).
SWEEP_CONFIG = quickstart_sweep_config(
    "(sweeps.grid(**{'optim.learning_rate': (0.02, 0.05, 0.1)})\n"
    "          + [{'model.dropout_rate': 1.5}])")

BASE = {**TINY, 'max_steps': 2}


# --- Declaring trials ------------------------------------------------------


def test_grid_is_every_combination_last_axis_fastest():
  assert sweeps.grid(a=(1, 2), b=('x', 'y')) == [
      {'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  # Dotted keys by ** or by double underscores.
  assert sweeps.grid(optim__learning_rate=(0.1,)) == [{'optim.learning_rate': 0.1}]


def test_zip_pairs_values_and_needs_equal_lengths():
  assert sweeps.zip_(a=(1, 2), b=(3, 4)) == [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  with pytest.raises(sweeps.SweepError, match='differ in length'):
    sweeps.zip_(a=(1, 2), b=(3,))


def test_random_draws_are_reproducible_and_in_range():
  draw = lambda seed: sweeps.random_search(
      20, seed, optim__learning_rate=sweeps.log_uniform(1e-3, 1.0),
      model__dropout_rate=sweeps.uniform(0.0, 0.5), model__batch_norm=(True, False))
  trials = draw(0)
  assert trials == draw(0) and trials != draw(1)
  assert all(1e-3 <= t['optim.learning_rate'] <= 1.0 for t in trials)
  assert all(0.0 <= t['model.dropout_rate'] <= 0.5 for t in trials)
  # Plain Python values (not numpy scalars), so they pass through JSON and flags.
  assert {type(t['model.batch_norm']) for t in trials} == {bool}
  assert {t['model.batch_norm'] for t in trials} == {True, False}


def test_product_combines_sweeps():
  seeds = sweeps.grid(seed=(0, 1))
  assert sweeps.product(sweeps.zip_(a=(1, 2)), seeds) == [
      {'a': 1, 'seed': 0}, {'a': 1, 'seed': 1}, {'a': 2, 'seed': 0}, {'a': 2, 'seed': 1}]


def test_trial_names_are_readable():
  overrides = {'optim.learning_rate': 0.1, 'optim.weight_decay': 1e-4}
  assert trials.trial_name(3, overrides) == 'trial_003_lr=0.1_wd=0.0001'
  assert trials.trial_name(0, {'model.fc_hidden': (64, 32)}) == 'trial_000_fc_hidden=64-32'
  # Two swept keys with the same last part keep their full names.
  assert trials.trial_name(1, {'a.rate': 1, 'b.rate': 2}) == 'trial_001_a.rate=1_b.rate=2'


def test_unknown_key_or_wrong_type_is_a_clear_error():
  config = ml_collections.ConfigDict({'optim': {'learning_rate': 0.1, 'batch_size': 128}})
  config.lock()
  with pytest.raises(sweeps.SweepError, match="did you mean optim.learning_rate"):
    sweeps.apply_overrides(config, {'optim.learning_rat': 0.2})
  with pytest.raises(sweeps.SweepError, match='optim.batch_size'):
    sweeps.apply_overrides(config, {'optim.batch_size': 'big'})
  assert sweeps.apply_overrides(config, {'optim.learning_rate': 0.2}).optim.learning_rate == 0.2
  assert config.optim.learning_rate == 0.1  # The base config is not changed.


def test_the_shipped_configs_sweeps_fit_their_configs():
  for name in ('fashion_mnist', 'cifar10'):
    path = os.path.join(REPO, 'nin_jax', 'configs', f'{name}.py')
    trials = sweeps.load_sweep(path)
    assert len(trials) > 1
    config = __import__(f'nin_jax.configs.{name}', fromlist=['x']).get_config()
    config.lock()
    for t in trials:
      sweeps.apply_overrides(config, t)


# --- Choosing on validation data ---------------------------------------------


def test_a_sweep_holds_out_a_tenth_of_training_unless_its_trials_hold_out_some():
  lrs = [{'optim.learning_rate': 0.1}, {'optim.learning_rate': 0.3}]
  # Fashion-MNIST: 60,000 training images of 10 classes, so 600 per class.
  assert sweeps.validation_holdout(make_tiny_config(), lrs) == {
      'dataset.validation_per_class_train': 600}
  cifar100 = make_tiny_config(**{'dataset.name': 'cifar100'})
  assert sweeps.validation_holdout(cifar100, lrs) == {'dataset.validation_per_class_train': 50}
  # The config, a --config.* flag or the sweep itself already holds some out.
  held = make_tiny_config(**{'dataset.validation_per_class_train': 50})
  assert sweeps.validation_holdout(held, lrs) == {}
  own = [{**t, 'dataset.validation_per_class_train': 20} for t in lrs]
  assert sweeps.validation_holdout(make_tiny_config(), own) == {}
  with pytest.raises(sweeps.SweepError, match='hold out different validation splits'):
    sweeps.validation_holdout(make_tiny_config(), [own[0], lrs[1]])
  imagenet = make_tiny_config(**{'dataset.name': 'imagenet2012'})
  with pytest.raises(sweeps.SweepError, match='cannot hold out validation images; rank on its '
                     'test split with --metric=test/accuracy --select_on_test'):
    sweeps.validation_holdout(imagenet, lrs)


def fake_trials(sweep_dir, scalars_by_trial):
  """Finished trials as the runner leaves them: overrides.json and final_metrics.json."""
  for i, (name, scalars) in enumerate(scalars_by_trial.items()):
    trial = sweep_dir / name
    trial.mkdir(parents=True)
    trials.write_json(trial / trials.OVERRIDES_FILE,
                      {'index': i, 'overrides': {'optim.learning_rate': 0.1 * (i + 1)}})
    trials.write_json(trial / trials.FINAL_METRICS_FILE, {'step': 8, **scalars})


def test_ranking_on_test_takes_an_explicit_flag_and_the_table_says_so(tmp_path):
  # Validation and test disagree: `a` is best on validation, `b` on test.
  fake_trials(tmp_path, {
      'a': {'val/accuracy': 0.90, 'test/accuracy': 0.80},
      'b': {'val/accuracy': 0.85, 'test/accuracy': 0.84}})

  paths = sweep_report.write_report(str(tmp_path))  # Chosen on validation: `a`.
  rows = read_csv(paths['csv'])
  assert [r['trial'] for r in rows] == ['a', 'b']
  assert list(rows[0])[3:5] == ['val/accuracy', 'test/accuracy']
  assert rows[0]['test/accuracy'] == '0.8'
  md = paths['md'].read_text()
  assert 'Chosen: a, val/accuracy 0.9, test/accuracy 0.8.' in md
  assert 'test metrics beside it chose nothing' in md

  with pytest.raises(sweeps.SweepError, match=r'--metric=test/accuracy would choose the trial '
                     r'on the test split; .*--metric=val/accuracy.*--select_on_test'):
    sweep_report.write_report(str(tmp_path), 'test/accuracy')
  with pytest.raises(sweeps.SweepError, match='--select_on_test ranks on a test metric'):
    sweep_report.write_report(str(tmp_path), 'val/accuracy', select_on_test=True)

  paths = sweep_report.write_report(str(tmp_path), 'test/accuracy', select_on_test=True)
  assert [r['trial'] for r in read_csv(paths['csv'])] == ['b', 'a']
  assert 'Ranked on the TEST split (test/accuracy, --select_on_test)' in paths['md'].read_text()


def test_trials_without_validation_metrics_say_how_to_get_them(tmp_path):
  fake_trials(tmp_path, {'a': {'test/accuracy': 0.8}})  # A sweep from before: no val/*.
  with pytest.raises(sweeps.SweepError, match=r'logged no validation metrics .* rerun the sweep '
                     r'into a new --workdir .* --metric=test/accuracy --select_on_test'):
    sweep_report.write_report(str(tmp_path))


def test_ranking_on_test_trains_on_the_whole_training_split(tmp_path):
  config_path = tmp_path / 'tiny_sweep.py'
  config_path.write_text(SWEEP_CONFIG)
  _, dry = sweep_in_process(config_path, tmp_path / 'sweep', dry_run=True,
                            metric='test/accuracy', select_on_test=True)
  assert len(dry.strip().splitlines()) == 4  # Commands only: no note, no hold-out.
  assert 'validation_per_class' not in dry


# --- Running a sweep end to end --------------------------------------------


def sweep_cli(config_path, workdir, *args, overrides=BASE):
  # --config must come before the --config.* overrides it applies to.
  return run_cli('sweep.py', workdir, {}, extra_args=[
      f'--config={config_path}', *[f'--config.{k}={v}' for k, v in overrides.items()], *args])


def sweep_in_process(config_path, workdir, **kwargs):
  """run_sweep as experiments/sweep.py calls it (cheaper than a process for
  the steps that train nothing new); returns (trials not done, printed text)."""
  import importlib.util
  import io
  spec = importlib.util.spec_from_file_location('cfg', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = sweeps.apply_overrides(module.get_config(), BASE)
  config.lock()
  out = io.StringIO()
  options = {'dry_run': False, 'report_only': False, 'metric': 'val/accuracy', **kwargs}
  not_done = research_commands.run_sweep(
      config=config, config_path=str(config_path), workdir=str(workdir),
      argv=[f'--config.{k}={v}' for k, v in BASE.items()],
      trainer=os.path.join(REPO, 'experiments', 'fashion_mnist.py'), stream=out, **options)
  return not_done, out.getvalue()


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_sweep_runs_skips_records_failures_and_reports(tmp_path):
  config_path = tmp_path / 'tiny_sweep.py'
  config_path.write_text(SWEEP_CONFIG)
  workdir = tmp_path / 'sweep'
  names = ['trial_000_lr=0.02', 'trial_001_lr=0.05', 'trial_002_lr=0.1', 'trial_003_dropout=1.5']

  # --dry_run: one exact shell command per trial, and nothing run.
  # Every trial holds out the same validation images (a tenth of Fashion-MNIST's
  # 60,000 training images: 600 per class), said once as a comment of the script.
  _, dry = sweep_in_process(config_path, workdir, dry_run=True)
  note, *commands = dry.strip().splitlines()
  assert note.startswith('# choosing on validation data: every trial holds out 600 training '
                         'images per class (--config.dataset.validation_per_class_train=600')
  assert len(commands) == 4
  assert all('--config.dataset.validation_per_class_train=600' in shlex.split(c)
             for c in commands)
  for command, name in zip(commands, names):
    argv = shlex.split(command)
    assert argv[0] == sys.executable and argv[1].endswith('fashion_mnist.py')
    assert f'--workdir={workdir / name}' in argv
    assert f'--config={config_path}' in argv
    assert '--config.max_steps=2' in argv and '--config.model.width_multiplier=0.125' in argv
  assert '--config.optim.learning_rate=0.05' in shlex.split(commands[1])
  assert '--config.model.dropout_rate=1.5' in shlex.split(commands[3])
  assert not workdir.exists()

  # The real command line: three trials finish, the fourth fails, the sweep goes
  # on, reports, and exits 1 to say not all trials are done.
  run = sweep_cli(config_path, workdir)
  assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
  assert '1 trial(s) failed' in run.stdout
  assert run.stderr == ''  # No library logs; each trial's output is in its train.log.
  expected = [{'optim.learning_rate': 0.02}, {'optim.learning_rate': 0.05},
              {'optim.learning_rate': 0.1}, {'model.dropout_rate': 1.5}]
  for name, command, overrides in zip(names, commands, expected):
    trial = workdir / name
    assert json.loads((trial / 'overrides.json').read_text())['overrides'] == overrides
    # What ran is exactly what --dry_run printed.
    assert f'$ {command}' in (trial / 'train.log').read_text()
  for name in names[:3]:
    assert (workdir / name / 'final_metrics.json').exists()
    assert (workdir / name / 'checkpoints').is_dir()  # An ordinary run's workdir.
  failed = json.loads((workdir / names[3] / 'status.json').read_text())
  assert failed['status'] == 'failed' and failed['returncode'] == 2
  assert 'config.model.dropout_rate=1.5: must be in [0, 1)' in failed['error_tail']
  assert not (workdir / names[3] / 'final_metrics.json').exists()

  # The table: finished trials best first by validation accuracy, each with its
  # test accuracy beside it, then the failed one with its error.
  rows = read_csv(workdir / 'results.csv')
  assert list(rows[0])[2:4] == ['optim.learning_rate', 'model.dropout_rate']
  assert list(rows[0])[4:6] == ['val/accuracy', 'test/accuracy']
  assert [r['trial'] for r in rows][3] == names[3]
  accuracies = [float(r['val/accuracy']) for r in rows[:3]]
  assert accuracies == sorted(accuracies, reverse=True)
  final = json.loads((workdir / rows[0]['trial'] / 'final_metrics.json').read_text())
  assert final['val/examples'] == 6000
  assert float(rows[0]['test/accuracy']) == final['test/accuracy']
  assert [r['status'] for r in rows] == ['done'] * 3 + ['failed']
  assert 'must be in [0, 1)' in rows[3]['error']
  markdown = (workdir / 'results.md').read_text()
  assert markdown.count('| trial_') == 4 and 'failed' in markdown
  assert 'Ranked on validation images held out of training (val/accuracy)' in markdown
  assert f"Chosen: {rows[0]['trial']}, val/accuracy " in markdown
  assert (workdir / 'results.png').stat().st_size > 5_000

  # Rerun: finished trials are skipped untouched; the failed one is tried again.
  before = {n: (workdir / n / 'final_metrics.json').stat().st_mtime_ns for n in names[:3]}
  not_done, again = sweep_in_process(config_path, workdir)
  assert not_done == 1
  assert again.count('finished before, skipped') == 3
  assert f'{names[3]}: failed' in again
  assert before == {n: (workdir / n / 'final_metrics.json').stat().st_mtime_ns
                    for n in names[:3]}

  # --report_only from the workdir alone, sorted by another metric (lower is better).
  research_commands.run_sweep(
      config=None, config_path=None, workdir=str(workdir), argv=[], trainer='',
      metric='val/loss', dry_run=False, report_only=True, stream=open(os.devnull, 'w'))
  losses = [float(r['val/loss']) for r in read_csv(workdir / 'results.csv')[:3]]
  assert losses == sorted(losses)
  with pytest.raises(sweeps.SweepError, match=r"metric 'val/nope' is in no finished trial; "
                     r"choose one of \[.*'val/accuracy'"):
    sweep_report.write_report(str(workdir), 'val/nope')


def test_bad_sweep_key_stops_before_any_trial(tmp_path):
  config_path = tmp_path / 'typo_sweep.py'
  config_path.write_text(SWEEP_CONFIG.replace("'optim.learning_rate'", "'optim.learning_rat'"))
  proc = sweep_cli(config_path, tmp_path / 'sweep')
  assert proc.returncode == 2
  assert "sweep key 'optim.learning_rat' is not in the config" in proc.stderr
  assert 'did you mean optim.learning_rate' in proc.stderr
  assert 'Traceback' not in proc.stderr and proc.stdout == ''
  assert not (tmp_path / 'sweep').exists()


def test_missing_config_or_report_metric_is_a_clear_error(tmp_path):
  proc = sweep_cli(os.path.join(REPO, 'nin_jax', 'configs', 'nope.py'), tmp_path / 's',
                   overrides={})
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'nope.py' in proc.stderr
  proc = run_cli('sweep.py', tmp_path / 'none', extra_args=['--report_only'])
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'does not exist' in proc.stderr
  # Choosing on the test split is refused unless asked for by name.
  proc = sweep_cli(FASHION_CONFIG, tmp_path / 's', '--metric=test/accuracy')
  assert proc.returncode == 2 and proc.stdout == '' and not (tmp_path / 's').exists()
  assert proc.stderr.splitlines() == [
      'error: --metric=test/accuracy would choose the trial on the test split; rank on '
      'validation data (--metric=val/accuracy, the default) or add --select_on_test to choose '
      'on test deliberately']
