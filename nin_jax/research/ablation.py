"""The paper's head ablation (section 4.6): GAP against FC against FC + dropout.

The three variants are the same config (data, schedule, body) with only
config.model.head / fc_dropout changed, run as the trials of a fixed sweep:
variants × seeds, the seed being a sweep axis like any other. With one seed
the trials live in <workdir>/{gap,fc,fc_dropout}/, with several in
<workdir>/<variant>_seed<s>/; either way they skip when finished and resume
when interrupted, like any sweep. Unlike a sweep it chooses nothing, so it
needs no validation split: the paper's protocol, test error of runs trained
on the training split. `write_report` tables each variant's test
error and train-test gap (mean ± sample std over the seeds) with its parameter
counts, lists every trial, and plots error bars and the runs' curves.

The paper's ablation (Table 5) ran on CIFAR-10 without augmentation, the
setup of nin_jax/configs/cifar10_noaug.py; its errors are in
PAPER_CIFAR10_ERROR and appear beside a CIFAR-10 run's.
"""

from __future__ import annotations

import statistics
from typing import Sequence

from etils import epath

from nin_jax.runtime import storage
from nin_jax.runtime import tables
from nin_jax.research import sweep_report
from nin_jax.research import sweeps
from nin_jax.research import trials as trials_lib

VARIANTS = ('gap', 'fc', 'fc_dropout')
LABELS = {'gap': 'mlpconv + GAP', 'fc': 'mlpconv + FC', 'fc_dropout': 'mlpconv + FC + dropout'}
# The paper's Table 5: CIFAR-10 test error (%), no augmentation, NIN body.
PAPER_CIFAR10_ERROR = {'gap': 10.41, 'fc': 11.59, 'fc_dropout': 10.88}


def variant_overrides(fc_dropout: float = 0.5) -> dict[str, dict]:
  """Each variant's overrides; everything else comes from the one base config."""
  return {'gap': {'model.head': 'gap', 'model.fc_dropout': 0.0},
          'fc': {'model.head': 'fc', 'model.fc_dropout': 0.0},
          'fc_dropout': {'model.head': 'fc', 'model.fc_dropout': float(fc_dropout)}}


def variant_of(overrides: dict) -> str:
  """Which variant a trial's overrides make."""
  if overrides.get('model.head') == 'gap':
    return 'gap'
  return 'fc_dropout' if overrides.get('model.fc_dropout') else 'fc'


def make_trials(config, config_path: str, workdir: str, trainer: str,
                base_args: Sequence[str] = (), fc_dropout: float = 0.5,
                seeds: Sequence[int] = ()) -> list[trials_lib.Trial]:
  """The variants, times `seeds` when given (else the config's own seed)."""
  variants = variant_overrides(fc_dropout)
  for overrides in variants.values():
    sweeps.apply_overrides(config, overrides)  # Checks the config has these fields.
  if len(seeds) > len(set(seeds)):
    raise sweeps.SweepError(f'--seeds repeats a seed: {list(seeds)}')
  if seeds:
    trials = sweeps.product(list(variants.values()), sweeps.grid(seed=list(seeds)))
    names = [f'{v}_seed{s}' for v in variants for s in seeds]
  else:
    trials, names = list(variants.values()), list(variants)
  return trials_lib.make_trials(
      trials, workdir,
      lambda wd, o: trials_lib.trial_command(trainer, config_path, wd, base_args, o),
      names=names)


def param_counts(run_config) -> tuple[int, int]:
  """(head, whole network) parameter counts of the model a run's config builds.

  Built abstractly (nnx.eval_shape), so no checkpoint and no compute is needed.
  The GAP head has no parameters.
  """
  import jax
  from flax import nnx
  from nin_jax.data import datasets
  from nin_jax.train import train_step
  info = datasets.DATASETS[run_config.dataset.name]
  model = nnx.eval_shape(lambda: train_step.build_model(
      run_config.model, info.num_classes, info.image_shape, seed=0))
  params = nnx.state(model, nnx.Param)
  total = sum(x.size for x in jax.tree.leaves(params))
  head = sum(x.size for x in jax.tree.leaves(params['fc'])) if model.fc is not None else 0
  return head, total


def _run_config(workdir: str):
  import ml_collections
  record = trials_lib.read_json(epath.Path(workdir) / 'config.json')
  return None if record is None else ml_collections.ConfigDict(record)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
  if not values:
    return None, None
  return (statistics.fmean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def _mean_plus_minus_std(mean: float | None, std: float | None) -> str:
  if mean is None:
    return ''
  return f'{mean:.2f}' + ('' if std is None else f' ± {std:.2f}')


def _trial_row(r: dict, cfg) -> dict:
  """One trial's numbers: test error and train-test gap in %, parameter counts."""
  s, done = r['scalars'], r['status'] == trials_lib.DONE
  test_acc = s.get('test/accuracy') if done else None
  train_acc = s.get('train/accuracy')
  head_p, total_p = param_counts(cfg) if cfg is not None else (None, None)
  return {
      'variant': variant_of(r['overrides']), 'trial': r['name'],
      'seed': r['overrides'].get('seed', cfg.seed if cfg is not None else None),
      'test_error': None if test_acc is None else 100 * (1 - test_acc),
      'train_acc': None if train_acc is None else 100 * train_acc,
      'gap': None if test_acc is None or train_acc is None else 100 * (train_acc - test_acc),
      'test_loss': s.get('test/loss') if done else None,
      'head_params': head_p, 'total_params': total_p, 'step': s.get('step'),
      'status': r['status'], 'error': r['error'], 'workdir': r['workdir']}


def _summaries(trials: list[dict], overrides_by_variant: dict) -> list[dict]:
  """Per variant: mean ± std over its finished seeds, and its parameter counts."""
  out = []
  for v in VARIANTS:
    mine = [t for t in trials if t['variant'] == v]
    done = [t for t in mine if t['status'] == trials_lib.DONE and t['test_error'] is not None]
    err, err_sd = _mean_std([t['test_error'] for t in done])
    gap, gap_sd = _mean_std([t['gap'] for t in done if t['gap'] is not None])
    train, _ = _mean_std([t['train_acc'] for t in done if t['train_acc'] is not None])
    if not mine:
      status = trials_lib.PENDING
    elif len(done) == len(mine):
      status = trials_lib.DONE
    else:
      status = ', '.join(sorted({t['status'] for t in mine if t not in done}))
    out.append({
        'variant': v, 'overrides': overrides_by_variant.get(v, {}), 'seeds_done': len(done),
        'seeds': len(mine), 'test_error': err, 'test_error_std': err_sd,
        'train_acc': train, 'gap': gap, 'gap_std': gap_sd,
        'head_params': next((t['head_params'] for t in mine), None),
        'total_params': next((t['total_params'] for t in mine), None),
        'step': max((t['step'] for t in done if t['step'] is not None), default=None),
        'status': status,
        'error': next((t['error'] for t in mine if t['error']), '')})
  return out


def write_report(workdir: str) -> dict[str, epath.Path]:
  """ablation.md/.csv (per variant), ablation_trials.md/.csv (per trial) and plots in workdir."""
  rows = sweep_report.collect(workdir)
  if not rows:
    raise sweeps.SweepError(f'no ablation runs in {workdir}; run experiments/ablation_head.py first')
  configs = {r['name']: _run_config(r['workdir']) for r in rows}
  cfg0 = next((c for c in configs.values() if c is not None), None)
  trials = [_trial_row(r, configs[r['name']]) for r in rows]
  by_variant = {variant_of(r['overrides']): r['overrides'] for r in rows}
  summary = _summaries(trials, by_variant)
  paper = _paper_errors(cfg0)

  columns = ['variant', 'head', 'fc_dropout', 'seeds', 'test error %', 'test error std',
             'final train acc %', 'train-test gap (pp)', 'gap std', 'head params',
             'total params', 'step', 'status', 'error']
  table = [[LABELS[s['variant']], s['overrides'].get('model.head'),
            s['overrides'].get('model.fc_dropout'), f"{s['seeds_done']}/{s['seeds']}",
            _round(s['test_error']), _round(s['test_error_std']), _round(s['train_acc']),
            _round(s['gap']), _round(s['gap_std']), s['head_params'], s['total_params'],
            s['step'], s['status'], s['error']] for s in summary]
  md_table = [[LABELS[s['variant']], f"{s['seeds_done']}/{s['seeds']}",
               _mean_plus_minus_std(s['test_error'], s['test_error_std']), _mean_plus_minus_std(s['gap'], s['gap_std']),
               s['head_params'], s['total_params'], s['status']] for s in summary]
  md_columns = ['variant', 'seeds done', 'test error % (mean ± std)',
                'train-test gap pp (mean ± std)', 'head params', 'total params', 'status']
  if paper:
    columns.insert(4, 'paper CIFAR-10 error %')
    md_columns.insert(2, 'paper CIFAR-10 error %')
    for row, md_row, v in zip(table, md_table, VARIANTS):
      row.insert(4, paper[v])
      md_row.insert(2, paper[v])
  root = storage.workdir_path(workdir)
  paths = {'md': root / 'ablation.md', 'csv': root / 'ablation.csv',
           'trials_md': root / 'ablation_trials.md', 'trials_csv': root / 'ablation_trials.csv',
           'png': root / 'ablation_curves.png', 'errors_png': root / 'ablation_errors.png'}
  trial_columns = ['variant', 'trial', 'seed', 'test error %', 'final train acc %',
                   'train-test gap (pp)', 'test loss', 'step', 'status', 'error']
  trial_table = [[LABELS[t['variant']], t['trial'], t['seed'], _round(t['test_error']),
                  _round(t['train_acc']), _round(t['gap']), t['test_loss'], t['step'],
                  t['status'], t['error']] for t in trials]
  # The Markdown summary shows mean ± std in one cell; the CSV keeps them apart.
  tables.write_table(md_columns, md_table, md_path=paths['md'], title=_title(cfg0, paper))
  tables.write_table(columns, table, csv_path=paths['csv'])
  tables.write_table(trial_columns, trial_table, md_path=paths['trials_md'],
                     csv_path=paths['trials_csv'], title='Every trial of the head ablation.')
  plot_errors(summary, paths['errors_png'])
  plot_curves({t['trial']: (t['variant'], t['workdir']) for t in trials}, paths['png'])
  return paths


def _round(x: float | None) -> float | None:
  return None if x is None else round(x, 2)


def _paper_errors(cfg) -> dict[str, float] | None:
  """The paper's Table 5 beside a run of its setup: CIFAR-10 without augmentation."""
  if cfg is None or cfg.dataset.name != 'cifar10':
    return None
  return PAPER_CIFAR10_ERROR


# The ablation compares heads; it tunes and chooses nothing, so its test errors stay held out.
PROTOCOL = ("The paper's protocol: every variant trains on the training split with the"
            " config's settings and reports its test error at the end; nothing is chosen"
            ' on any split.')


def _title(cfg, paper) -> str:
  if cfg is None:
    return 'Head ablation (paper section 4.6). ' + PROTOCOL
  text = (f'Head ablation (paper section 4.6) on {cfg.dataset.name}, model '
          f'{cfg.model.preset} x{cfg.model.width_multiplier}, {cfg.num_epochs:g} epoch(s)')
  if cfg.dataset.train_subset:
    text += f', {cfg.dataset.train_subset} training images'
  text += ('. Mean ± sample std over the finished seeds. Train accuracy is the last'
           ' logged window (training mode: dropout and any augmentation on);'
           ' gap = train − test accuracy.')
  if paper and (cfg.augment.translate or cfg.augment.flip):
    text += (" The paper's numbers are for CIFAR-10 without augmentation"
             ' (nin_jax/configs/cifar10_noaug.py); this run augments.')
  return text + ' ' + PROTOCOL


def plot_errors(summary: list[dict], png_path: epath.Path) -> None:
  """Test error and train-test gap per variant, mean with ±1 std error bars."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  labels = [LABELS[s['variant']].replace('mlpconv + ', '') for s in summary]
  for ax, key, ylabel in ((axes[0], 'test_error', 'test error (%)'),
                          (axes[1], 'gap', 'train − test accuracy (pp)')):
    means = [s[key] if s[key] is not None else 0.0 for s in summary]
    stds = [s[f'{key}_std'] or 0.0 for s in summary]
    ax.bar(range(len(summary)), means, yerr=stds, capsize=6,
           color=[f'C{i}' for i in range(len(summary))], alpha=0.8)
    ax.set_xticks(range(len(summary)), labels)
    ax.set_ylabel(ylabel)
    ax.grid(axis='y', alpha=0.3)
    for i, s in enumerate(summary):
      ax.annotate(f"n={s['seeds_done']}", (i, means[i]), ha='center', va='bottom',
                  xytext=(0, 3 + 10 * bool(stds[i])), textcoords='offset points', fontsize=8)
  fig.suptitle('Head ablation: mean ± std over seeds')
  fig.tight_layout()
  storage.save_figure(fig, png_path, dpi=100)
  plt.close(fig)


def plot_curves(runs: dict[str, tuple[str, str]], png_path: epath.Path) -> None:
  """Loss and accuracy against epoch, train (lines) and test (dashed), one colour per variant.

  `runs` maps a trial name to (variant, workdir); every seed of a variant is drawn.
  """
  from nin_jax.runtime import curves, metrics  # They import jax: only for the plot.
  fig, axes = curves.curves_figure()
  labelled = set()
  for variant, wd in runs.values():
    try:
      records = metrics.read_metrics(wd)
    except OSError:
      continue
    curves.draw_curves(axes, records, color=f'C{VARIANTS.index(variant)}',
                        label=None if variant in labelled else LABELS[variant])
    labelled.add(variant)
  curves.save_curves(fig, axes, 'Head ablation: GAP vs FC vs FC + dropout (every seed)',
                      png_path)
