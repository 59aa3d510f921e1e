"""A sweep's results: one row per trial, as results.md, results.csv and results.png.

Reads what the trials left in their directories (nin_jax/research/trials.py): the
overrides, the status, metrics.jsonl and final_metrics.json. Local or gs://.
"""

from __future__ import annotations

import json
from typing import Sequence

from etils import epath

from nin_jax.runtime import storage
from nin_jax.runtime import tables
from nin_jax.research import trials
from nin_jax.research.sweeps import SweepError


def trial_dirs(sweep_dir: str) -> list[epath.Path]:
  """The trial directories under a sweep workdir (those with overrides.json), in order."""
  root = storage.workdir_path(sweep_dir)
  if not root.is_dir():
    raise SweepError(f'sweep workdir {sweep_dir} does not exist')
  found = []
  for child in root.iterdir():
    record = trials.read_json(child / trials.OVERRIDES_FILE)
    if record is not None:
      found.append((record.get('index', 0), child.name, child))
  return [child for _, _, child in sorted(found)]


def last_scalars(workdir: epath.PathLike) -> dict[str, float]:
  """The last logged value of every scalar, then final_metrics.json on top."""
  values: dict[str, float] = {}
  try:
    text = (epath.Path(workdir) / 'metrics.jsonl').read_text()
  except OSError:
    text = ''
  for line in text.splitlines():
    if line.strip():
      try:
        values.update(json.loads(line))
      except ValueError:  # A line cut short by a kill.
        pass
  values.pop('time', None)
  values.update(trials.read_json(epath.Path(workdir) / trials.FINAL_METRICS_FILE) or {})
  return values


def collect(sweep_dir: str) -> list[dict]:
  """One row per trial: name, overrides, status, scalars, wall time, error."""
  rows = []
  for workdir in trial_dirs(sweep_dir):
    record = trials.read_json(workdir / trials.OVERRIDES_FILE) or {}
    status = trials.read_json(workdir / trials.STATUS_FILE) or {}
    state = trials.DONE if trials.is_done(workdir) else status.get('status') or (
        trials.INCOMPLETE if (workdir / 'metrics.jsonl').exists() else trials.PENDING)
    rows.append({'name': workdir.name, 'workdir': str(workdir),
                 'index': record.get('index'), 'overrides': record.get('overrides', {}),
                 'status': state, 'scalars': last_scalars(workdir),
                 'wall_s': status.get('wall_s'),
                 'error': (trials.short_error(status.get('error_tail', ''))
                           if state == trials.FAILED else '')})
  return rows


def lower_is_better(metric: str) -> bool:
  return any(w in metric for w in ('loss', 'error'))


# The loop logs metrics of the validation images held out of training as val/*,
# of the test split as test/*.
VALIDATION, TEST = 'val/', 'test/'


def check_ranking(metric: str, select_on_test: bool) -> None:
  """Trials are chosen on validation data; on test only when asked for by name."""
  if metric.startswith(TEST) and not select_on_test:
    raise SweepError(
        f'--metric={metric} would choose the trial on the test split; rank on validation '
        f'data (--metric={VALIDATION}{metric[len(TEST):]}, the default) or add '
        '--select_on_test to choose on test deliberately')
  if select_on_test and not metric.startswith(TEST):
    raise SweepError(f'--select_on_test ranks on a test metric and --metric={metric} is '
                     'not one; pass e.g. --metric=test/accuracy')


def paired_test_metric(metric: str) -> str | None:
  """The test metric reported beside a validation metric: val/accuracy -> test/accuracy."""
  return TEST + metric[len(VALIDATION):] if metric.startswith(VALIDATION) else None


def sort_rows(rows: list[dict], metric: str) -> list[dict]:
  """Done trials by the metric (best first), then the rest in trial order."""
  sign = 1 if lower_is_better(metric) else -1
  scored = [r for r in rows if r['status'] == trials.DONE and metric in r['scalars']]
  rest = [r for r in rows if r not in scored]
  return sorted(scored, key=lambda r: sign * r['scalars'][metric]) + rest


def check_metric(rows: list[dict], metric: str) -> None:
  done = [r for r in rows if r['status'] == trials.DONE]
  if not done or any(metric in r['scalars'] for r in done):
    return
  if metric.startswith(VALIDATION) and not any(
      k.startswith(VALIDATION) for r in done for k in r['scalars']):
    raise SweepError(
        'the trials logged no validation metrics (they held out no validation images); '
        'rerun the sweep into a new --workdir (it holds them out by default), or rank on '
        'test with --metric=test/accuracy --select_on_test')
  available = sorted({k for r in done for k in r['scalars']})
  raise SweepError(f'metric {metric!r} is in no finished trial; choose one of {available}')


def selection_text(rows: list[dict], metric: str, select_on_test: bool) -> str:
  """What the ranking chose and on which split, in words, for the table's title."""
  if select_on_test:
    basis = (f'Ranked on the TEST split ({metric}, --select_on_test): the chosen trial\'s '
             'test score is what chose it, so it is optimistic, not a held-out estimate.')
  elif metric.startswith(VALIDATION):
    basis = (f'Ranked on validation images held out of training ({metric}); the test '
             'metrics beside it chose nothing.')
  else:
    basis = f'Ranked by {metric}.'
  best = rows[0] if rows and rows[0]['status'] == trials.DONE else None
  if best is None or metric not in best['scalars']:
    return basis
  beside = paired_test_metric(metric)
  chosen = f' Chosen: {best["name"]}, {metric} {tables.cell_text(best["scalars"][metric])}'
  if beside in best['scalars']:
    chosen += f', {beside} {tables.cell_text(best["scalars"][beside])}'
  return basis + chosen + '.'


def write_report(sweep_dir: str, metric: str = VALIDATION + 'accuracy',
                 select_on_test: bool = False) -> dict[str, epath.Path]:
  """results.md, results.csv (sorted by metric) and results.png in sweep_dir.

  A validation metric's test metric stands beside it; ranking on a test
  metric needs select_on_test, and the title then says so.
  """
  check_ranking(metric, select_on_test)
  rows = collect(sweep_dir)
  if not rows:
    raise SweepError(f'no trials in {sweep_dir} (no */{trials.OVERRIDES_FILE}); run the sweep first')
  check_metric(rows, metric)
  rows = sort_rows(rows, metric)
  keys = list(dict.fromkeys(k for r in rows for k in r['overrides']))
  extra = [m for m in dict.fromkeys((paired_test_metric(metric), 'test/accuracy', 'test/loss',
                                     'train/loss', 'train/accuracy'))
           if m and m != metric and any(m in r['scalars'] for r in rows)]
  columns = ['rank', 'trial', *keys, metric, *extra, 'step', 'status', 'wall_s', 'error']
  table = []
  for rank, r in enumerate(rows, 1):
    s = r['scalars']
    table.append([rank if r['status'] == trials.DONE and metric in s else None, r['name'],
                  *[_json_value(r['overrides'].get(k)) for k in keys], s.get(metric),
                  *[s.get(m) for m in extra], s.get('step'), r['status'],
                  None if r['wall_s'] is None else round(r['wall_s'], 1), r['error']])
  root = storage.workdir_path(sweep_dir)
  paths = {'md': root / 'results.md', 'csv': root / 'results.csv', 'png': root / 'results.png'}
  counts = {s: sum(r['status'] == s for r in rows)
            for s in (trials.DONE, trials.FAILED, trials.INCOMPLETE, trials.PENDING)}
  title = (f'Sweep {root.name}: {len(rows)} trials ('
           + ', '.join(f'{n} {s}' for s, n in counts.items() if n) + f'), sorted by {metric} '
           f'({"lower" if lower_is_better(metric) else "higher"} is better). '
           + selection_text(rows, metric, select_on_test))
  tables.write_table(columns, table, md_path=paths['md'], csv_path=paths['csv'], title=title)
  plot_metric(rows, keys, metric, paths['png'])
  return paths


def _json_value(v):
  return trials.format_flag_value(v) if isinstance(v, (list, tuple)) else v


def plot_metric(rows: list[dict], keys: Sequence[str], metric: str, png_path: epath.Path) -> None:
  """One panel per swept key: the metric of each finished trial against its value."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  done = [r for r in rows if r['status'] == trials.DONE and metric in r['scalars']]
  keys = [k for k in keys if len({repr(r['overrides'].get(k)) for r in rows}) > 1] or ['trial']
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
  for ax, key in zip(axes[0], keys):
    xs = [r['index'] if key == 'trial' else r['overrides'].get(key) for r in done]
    ys = [r['scalars'][metric] for r in done]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if numeric and xs:
      ax.scatter(xs, ys, zorder=3)
      positive = [x for x in xs if x > 0]
      if len(positive) == len(xs) and max(xs) / min(xs) >= 10:
        ax.set_xscale('log')
    else:
      labels = sorted({tables.cell_text(_json_value(x)) for x in xs})
      ax.scatter([labels.index(tables.cell_text(_json_value(x))) for x in xs], ys, zorder=3)
      ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  failed = sum(r['status'] == trials.FAILED for r in rows)
  title = (f'{png_path.parent.name}: {len(done)} finished'
           + (f', {failed} failed (not shown)' if failed else ''))
  fig.suptitle(title, fontfamily=storage.font_family_for(title))
  fig.tight_layout()
  storage.save_figure(fig, png_path, dpi=100)
  plt.close(fig)
