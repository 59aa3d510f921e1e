"""The paper's head ablation (section 4.6): GAP against FC against FC + dropout.

The three variants are the same config (seed, data, schedule, body) with only
config.model.head / fc_dropout changed, run as the trials of a fixed sweep in
<workdir>/{gap,fc,fc_dropout}/ (so they skip when finished and resume when
interrupted, like any sweep). `write_report` tables test error, parameter
counts and the train-test gap, and plots the three runs' curves.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Sequence

from nin_jax import sweeps

VARIANTS = ('gap', 'fc', 'fc_dropout')
LABELS = {'gap': 'mlpconv + GAP', 'fc': 'mlpconv + FC', 'fc_dropout': 'mlpconv + FC + dropout'}
# Paper section 4.6, CIFAR-10 test error (%; decimals as commonly quoted, unconfirmed).
PAPER_CIFAR10_ERROR = {'gap': 10.41, 'fc': 11.59, 'fc_dropout': 10.88}


def variant_overrides(fc_dropout: float = 0.5) -> dict[str, dict]:
  """Each variant's overrides; everything else comes from the one base config."""
  return {'gap': {'model.head': 'gap', 'model.fc_dropout': 0.0},
          'fc': {'model.head': 'fc', 'model.fc_dropout': 0.0},
          'fc_dropout': {'model.head': 'fc', 'model.fc_dropout': float(fc_dropout)}}


def make_trials(config, config_path: str, workdir: str, trainer: str,
                base_args: Sequence[str] = (), fc_dropout: float = 0.5) -> list[sweeps.Trial]:
  variants = variant_overrides(fc_dropout)
  for overrides in variants.values():
    sweeps.apply_overrides(config, overrides)  # Checks the config has these fields.
  return sweeps.make_trials(
      list(variants.values()), workdir,
      lambda wd, o: sweeps.trial_command(trainer, config_path, wd, base_args, o),
      names=list(variants))


def param_counts(run_config) -> tuple[int, int]:
  """(head, whole network) parameter counts of the model a run's config builds.

  Built abstractly (nnx.eval_shape), so no checkpoint and no compute is needed.
  The GAP head has no parameters.
  """
  import jax
  from flax import nnx
  from nin_jax import datasets, steps
  info = datasets.DATASETS[run_config.dataset.name]
  model = nnx.eval_shape(lambda: steps.build_model(
      run_config.model, info.num_classes, info.image_shape, seed=0))
  params = nnx.state(model, nnx.Param)
  total = sum(x.size for x in jax.tree.leaves(params))
  head = sum(x.size for x in jax.tree.leaves(params['fc'])) if model.fc is not None else 0
  return head, total


def _run_config(workdir: str):
  import ml_collections
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def write_report(workdir: str) -> dict[str, str]:
  """ablation.md, ablation.csv and ablation_curves.png in workdir."""
  rows = {r['name']: r for r in sweeps.collect(workdir)}
  missing = [v for v in VARIANTS if v not in rows]
  if len(missing) == len(VARIANTS):
    raise sweeps.SweepError(f'no ablation runs in {workdir}; run experiments/ablation_head.py first')
  columns = ['variant', 'head', 'fc_dropout', 'test error %', 'test loss', 'head params',
             'total params', 'final train acc %', 'train-test gap (pp)', 'step', 'status',
             'error']
  cfg0 = None
  table = []
  for v in VARIANTS:
    r = rows.get(v)
    if r is None:
      table.append([LABELS[v], None, None, None, None, None, None, None, None, None,
                    sweeps.PENDING, ''])
      continue
    s, cfg = r['scalars'], _run_config(r['workdir'])
    cfg0 = cfg0 or cfg
    head_p, total_p = param_counts(cfg) if cfg is not None else (None, None)
    done = r['status'] == sweeps.DONE
    test_acc = s.get('test/accuracy') if done else None
    train_acc = s.get('train/accuracy')
    table.append([
        LABELS[v], r['overrides'].get('model.head'), r['overrides'].get('model.fc_dropout'),
        None if test_acc is None else round(100 * (1 - test_acc), 2),
        s.get('test/loss') if done else None, head_p, total_p,
        None if train_acc is None else round(100 * train_acc, 2),
        None if test_acc is None or train_acc is None else round(100 * (train_acc - test_acc), 2),
        s.get('step'), r['status'], r['error']])
  if cfg0 is not None and cfg0.dataset.name == 'cifar10':
    columns.insert(4, 'paper CIFAR-10 error %')
    for row, v in zip(table, VARIANTS):
      row.insert(4, PAPER_CIFAR10_ERROR[v])
  paths = {'md': os.path.join(workdir, 'ablation.md'),
           'csv': os.path.join(workdir, 'ablation.csv'),
           'png': os.path.join(workdir, 'ablation_curves.png')}
  title = ('Head ablation (paper section 4.6)'
           + (f' on {cfg0.dataset.name}, model {cfg0.model.preset} x{cfg0.model.width_multiplier}, '
              f'{cfg0.num_epochs:g} epoch(s)' if cfg0 is not None else '')
           + '. Train accuracy is the last logged window (training mode: augmentation'
             ' and dropout on); gap = train − test accuracy.')
  sweeps.write_table(columns, table, paths['md'], paths['csv'], title=title)
  plot_curves({v: rows[v]['workdir'] for v in VARIANTS if v in rows}, paths['png'])
  return paths


def plot_curves(workdirs: dict[str, str], png_path: str) -> str:
  """Loss and accuracy against epoch, train (lines) and test (markers), per variant."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from nin_jax import metrics

  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for i, (variant, wd) in enumerate(workdirs.items()):
    try:
      records = metrics.read_metrics(wd)
    except OSError:
      continue
    color = f'C{i}'
    for name, ax in (('loss', ax_loss), ('accuracy', ax_acc)):
      train = [(r['epoch'], r[f'train/{name}']) for r in records if f'train/{name}' in r]
      test = [(r['epoch'], r[f'test/{name}']) for r in records if f'test/{name}' in r]
      if train:
        ax.plot(*zip(*train), color=color, label=f'{LABELS[variant]} train')
      if test:
        ax.plot(*zip(*test), color=color, linestyle='--', marker='o',
                label=f'{LABELS[variant]} test')
  for ax, ylabel in ((ax_loss, 'cross-entropy'), (ax_acc, 'top-1 accuracy')):
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle('Head ablation: GAP vs FC vs FC + dropout')
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
  return png_path


def main(*, config, config_path: str, workdir: str, argv: Sequence[str], trainer: str,
         fc_dropout: float, dry_run: bool, report_only: bool, stream=sys.stdout) -> int:
  """Dry-runs, runs or reports the ablation; returns the number of variants not done."""
  if not report_only:
    trials = make_trials(config, config_path, workdir, trainer,
                         sweeps.base_override_args(argv), fc_dropout)
    if dry_run:
      for t in trials:
        print(shlex.join(t.command), file=stream)
      return 0
    statuses = sweeps.run_trials(trials, base_args=sweeps.base_override_args(argv),
                                 stream=stream)
  paths = write_report(workdir)
  print(sweeps.read_text(paths['md']), file=stream)
  print(f'wrote {paths["md"]}, {paths["csv"]}, {paths["png"]}', file=stream)
  return 0 if report_only else sum(s != sweeps.DONE for s in statuses.values())
