"""Head ablation (paper section 4.6): the same network, seed, data and schedule
with a GAP head, an FC head and an FC head with dropout, each an ordinary run
in its own directory, tabled with test error, parameter counts and the
train-test gap, and plotted together. It chooses nothing (the paper's protocol:
train on the training split, report test error), and its report says so."""

import csv
import io
import json
import os

import pytest

from conftest import REPO, TINY, make_tiny_config, run_cli
from nin_jax.cli import research_commands
from nin_jax.research import ablation
from nin_jax.research import sweeps
from nin_jax.research import trials

BASE = {**TINY, 'max_steps': 2}


def ablation_cli(workdir, *args):
  return run_cli('ablation_head.py', workdir, BASE, extra_args=list(args))


def test_three_heads_same_run_otherwise_tabled_and_plotted(tmp_path):
  proc = ablation_cli(tmp_path, '--fc_dropout=0.3')
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert proc.stderr == ''  # No library logs; each trial's output is in its train.log.

  configs = {v: json.loads((tmp_path / v / 'config.json').read_text())
             for v in ('gap', 'fc', 'fc_dropout')}
  assert [(c['model']['head'], c['model']['fc_dropout']) for c in configs.values()] == [
      ('gap', 0.0), ('fc', 0.0), ('fc', 0.3)]
  # Nothing but the head differs: same seed, data, schedule, body.
  for c in configs.values():
    c['model'].pop('head'), c['model'].pop('fc_dropout')
  assert configs['gap'] == configs['fc'] == configs['fc_dropout']
  assert configs['gap']['dataset']['train_subset'] == 512  # Base overrides reach every run.

  with open(tmp_path / 'ablation.csv') as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  assert list(rows) == ['mlpconv + GAP', 'mlpconv + FC', 'mlpconv + FC + dropout']
  gap, fc, fc_drop = rows.values()
  # The 1/8-width MNIST NIN ends in 7x7 maps, one per class (10): GAP has no
  # parameters, the FC head one Dense layer of 7*7*10 -> 10 (weights + biases).
  assert int(gap['head params']) == 0
  assert int(fc['head params']) == int(fc_drop['head params']) == 7 * 7 * 10 * 10 + 10
  assert int(fc['total params']) == int(gap['total params']) + 7 * 7 * 10 * 10 + 10
  for r in rows.values():
    assert r['status'] == 'done' and int(r['step']) == 2
    accuracy = json.loads((tmp_path / ('gap' if r is gap else 'fc' if r is fc else
                                       'fc_dropout') / 'final_metrics.json').read_text())
    assert float(r['test error %']) == round(100 * (1 - accuracy['test/accuracy']), 2)
    assert abs(float(r['train-test gap (pp)']) - (float(r['final train acc %']) - (
        100 - float(r['test error %'])))) < 0.02
  assert (tmp_path / 'ablation.md').read_text().count('| mlpconv + ') == 3
  assert (tmp_path / 'ablation_curves.png').stat().st_size > 10_000

  # Rerunning skips the finished variants and rewrites the same table; rerunning
  # with other settings into the same directory is refused before anything runs.
  # (In process, as experiments/ablation_head.py calls it: nothing trains here.)
  not_done, out = ablation_main(tmp_path, fc_dropout=0.3)
  assert not_done == 0 and out.count('finished before, skipped') == 3
  with pytest.raises(sweeps.SweepError, match='holds a trial with other overrides'):
    ablation_main(tmp_path, fc_dropout=0.5)


def ablation_main(workdir, fc_dropout, seeds=(), dry_run=False):
  from nin_jax.configs import fashion_mnist
  config = sweeps.apply_overrides(fashion_mnist.get_config(), BASE)
  out = io.StringIO()
  not_done = research_commands.run_ablation(
      config=config, config_path=os.path.join(REPO, 'nin_jax', 'configs', 'fashion_mnist.py'),
      workdir=str(workdir), argv=[f'--config.{k}={v}' for k, v in BASE.items()],
      trainer=os.path.join(REPO, 'experiments', 'fashion_mnist.py'), fc_dropout=fc_dropout,
      dry_run=dry_run, report_only=False, seeds=seeds, stream=out)
  return not_done, out.getvalue()


def test_seeds_are_a_sweep_axis_of_every_variant(tmp_path):
  """--seeds=0,1,2 makes 9 trials: each variant once per seed, nothing else differing."""
  not_done, out = ablation_main(tmp_path, fc_dropout=0.5, seeds=(0, 1, 2), dry_run=True)
  commands = out.strip().splitlines()
  assert not_done == 0 and len(commands) == 9
  expected = [(v, s) for v in ('gap', 'fc', 'fc_dropout') for s in (0, 1, 2)]
  for command, (variant, seed) in zip(commands, expected):
    assert f'--workdir={tmp_path / f"{variant}_seed{seed}"}' in command
    assert command.endswith(f'--config.seed={seed}')
    assert ("--config.model.head=gap" in command) == (variant == 'gap')
    assert ('--config.model.fc_dropout=0.5' in command) == (variant == 'fc_dropout')
    assert 'validation' not in command  # Nothing is chosen, so nothing is held out.
  with pytest.raises(sweeps.SweepError, match='repeats a seed'):
    ablation_main(tmp_path, fc_dropout=0.5, seeds=(0, 0), dry_run=True)


def test_report_gives_mean_and_std_over_seeds(tmp_path):
  """The summary row of a variant is the mean and sample std of its seeds' runs."""
  config = sweeps.apply_overrides(make_tiny_config(), {})
  test_acc = {'gap': (0.90, 0.92), 'fc': (0.88, 0.85), 'fc_dropout': (0.89, 0.89)}
  train_acc = {'gap': (0.95, 0.96), 'fc': (0.99, 0.98), 'fc_dropout': (0.97, 0.96)}
  for trial in ablation.make_trials(config, 'config.py', str(tmp_path), 'train.py',
                                    seeds=(3, 4)):
    variant, seed = trial.name.rsplit('_seed', 1)
    i = int(seed) - 3
    run = tmp_path / trial.name
    run.mkdir()
    (run / trials.OVERRIDES_FILE).write_text(json.dumps(
        {'index': trial.index, 'overrides': trial.overrides, 'base_overrides': []}))
    (run / 'config.json').write_text(
        sweeps.apply_overrides(config, trial.overrides).to_json_best_effort())
    (run / 'metrics.jsonl').write_text(json.dumps(
        {'step': 16, 'epoch': 2.0, 'train/accuracy': train_acc[variant][i]}) + '\n')
    (run / 'final_metrics.json').write_text(json.dumps(
        {'step': 16, 'test/accuracy': test_acc[variant][i], 'test/loss': 0.3}))

  paths = ablation.write_report(str(tmp_path))
  with open(paths['csv']) as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  fc = rows['mlpconv + FC']
  assert fc['seeds'] == '2/2' and fc['status'] == 'done'
  assert float(fc['test error %']) == 13.5             # mean of 12 and 15
  assert float(fc['test error std']) == 2.12           # sample std: 3 / sqrt(2)
  assert float(fc['train-test gap (pp)']) == 12.0      # mean of 11 and 13
  assert float(fc['gap std']) == 1.41
  assert rows['mlpconv + FC + dropout']['test error std'] == '0.0'
  assert int(rows['mlpconv + GAP']['head params']) == 0
  assert int(fc['head params']) == 7 * 7 * 10 * 10 + 10
  md = open(paths['md']).read()
  assert '| mlpconv + FC | 2/2 | 13.50 ± 2.12 | 12.00 ± 1.41 |' in md
  assert ("The paper's protocol: every variant trains on the training split with the config's "
          'settings and reports its test error at the end; nothing is chosen on any split.') in md
  with open(paths['trials_csv']) as f:
    assert len(list(csv.DictReader(f))) == 6
  assert os.path.getsize(paths['errors_png']) > 10_000


def test_the_papers_numbers_stand_beside_the_papers_setup():
  """Table 5 is CIFAR-10 without augmentation: cifar10_noaug is the ablation's baseline."""
  from nin_jax.configs import cifar10, cifar10_noaug, fashion_mnist
  noaug = cifar10_noaug.get_config()
  assert ablation._paper_errors(noaug) == {'gap': 10.41, 'fc': 11.59, 'fc_dropout': 10.88}
  assert 'this run augments' not in ablation._title(noaug, ablation._paper_errors(noaug))
  augmented = cifar10.get_config()
  assert 'without augmentation' in ablation._title(augmented, ablation._paper_errors(augmented))
  assert ablation._paper_errors(fashion_mnist.get_config()) is None
