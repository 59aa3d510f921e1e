"""Head ablation (paper section 4.6): the same network, seed, data and schedule
with a GAP head, an FC head and an FC head with dropout, each an ordinary run
in its own directory, tabled with test error, parameter counts and the
train-test gap, and plotted together."""

import csv
import io
import json
import os

import pytest

from conftest import REPO, TINY, run_cli
from nin_jax import ablation, sweeps

BASE = {**TINY, 'max_steps': 2}


def ablation_cli(workdir, *args):
  return run_cli('ablation_head.py', workdir, BASE, extra_args=list(args))


def test_three_heads_same_run_otherwise_tabled_and_plotted(tmp_path):
  proc = ablation_cli(tmp_path, '--fc_dropout=0.3')
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

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


def ablation_main(workdir, fc_dropout):
  from nin_jax.configs import fashion_mnist
  config = sweeps.apply_overrides(fashion_mnist.get_config(), BASE)
  out = io.StringIO()
  not_done = ablation.main(
      config=config, config_path=os.path.join(REPO, 'nin_jax', 'configs', 'fashion_mnist.py'),
      workdir=str(workdir), argv=[f'--config.{k}={v}' for k, v in BASE.items()],
      trainer=os.path.join(REPO, 'experiments', 'fashion_mnist.py'), fc_dropout=fc_dropout,
      dry_run=False, report_only=False, stream=out)
  return not_done, out.getvalue()
