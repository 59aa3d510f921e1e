"""Sweeps: trials written next to the config they sweep, run as ordinary runs.

A config file may define `sweep()`, returning (or yielding) override dicts with
dotted keys, built with the helpers here:

    def sweep():
      return sweeps.product(
          sweeps.grid(**{'optim.learning_rate': (0.03, 0.1, 0.3)}),
          sweeps.zip_(optim__weight_decay=(0, 1e-4), seed=(0, 1)))

(`a__b` in a keyword is the key `a.b`, for configs written without `**{}`.)

`run_sweep` runs each trial as the experiment's own command line in a fresh
process, in `<sweep workdir>/trial_<i>_<key=value...>/`; `write_report` tables
and plots the results. Both are what experiments/sweep.py calls.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

OVERRIDES_FILE = 'overrides.json'
STATUS_FILE = 'status.json'
FINAL_METRICS_FILE = 'final_metrics.json'
LOG_FILE = 'train.log'
DONE, FAILED, INCOMPLETE, PENDING = 'done', 'failed', 'incomplete', 'pending'


class SweepError(ValueError):
  """Bad sweep input (no sweep(), unknown key, missing metric): the message says what."""


# ---------------------------------------------------------------------------
# Building sweeps.


def _key(name: str) -> str:
  return name.replace('__', '.')


def grid(**axes: Sequence[Any]) -> list[dict]:
  """Every combination of the axes' values; the last axis varies fastest."""
  keys = [_key(k) for k in axes]
  values = [list(v) for v in axes.values()]
  for k, v in zip(keys, values):
    if not v:
      raise SweepError(f'grid axis {k!r} has no values')
  return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def zip_(**axes: Sequence[Any]) -> list[dict]:
  """The i-th trial takes the i-th value of every axis (axes of equal length)."""
  lengths = {_key(k): len(v) for k, v in axes.items()}
  if len(set(lengths.values())) > 1:
    raise SweepError(f'zip_ axes differ in length: {lengths}')
  keys = [_key(k) for k in axes]
  return [dict(zip(keys, combo)) for combo in zip(*axes.values())]


@dataclasses.dataclass(frozen=True)
class Distribution:
  """A named sampler for `random`: draw(numpy Generator) -> value."""
  draw: Callable[[Any], Any]
  description: str

  def __repr__(self):
    return self.description


def uniform(low: float, high: float) -> Distribution:
  return Distribution(lambda rng: float(rng.uniform(low, high)), f'uniform({low}, {high})')


def log_uniform(low: float, high: float) -> Distribution:
  """Uniform in log space: the usual prior for learning rates and decays."""
  if not 0 < low < high:
    raise SweepError(f'log_uniform needs 0 < low < high, got ({low}, {high})')
  return Distribution(
      lambda rng: float(math.exp(rng.uniform(math.log(low), math.log(high)))),
      f'log_uniform({low}, {high})')


def choice(*values: Any) -> Distribution:
  if not values:
    raise SweepError('choice() needs at least one value')
  # Index, not rng.choice(values): that would turn ints and bools into numpy scalars.
  return Distribution(lambda rng: values[int(rng.integers(len(values)))],
                      f'choice{values}')


def random(n: int, seed: int = 0, **distributions: Distribution | Sequence[Any]) -> list[dict]:
  """n trials drawn independently; a plain sequence means choice(*sequence).

  The draws are a function of `seed` only, so a rerun of the sweep names the
  same trials and resumes them.
  """
  import numpy as np
  rng = np.random.default_rng(seed)
  dists = {_key(k): d if isinstance(d, Distribution) else choice(*d)
           for k, d in distributions.items()}
  return [{k: d.draw(rng) for k, d in dists.items()} for _ in range(n)]


def product(*sweeps: Iterable[dict]) -> list[dict]:
  """Every combination of trials of several sweeps (e.g. a grid × seeds)."""
  out = []
  for parts in itertools.product(*[list(s) for s in sweeps]):
    merged = {}
    for p in parts:
      merged.update(p)
    out.append(merged)
  return out


# ---------------------------------------------------------------------------
# Loading and checking a config's sweep.


def load_sweep(config_path: str) -> list[dict]:
  """The trials of the `sweep()` in a config file, as a list of override dicts."""
  if not os.path.isfile(config_path):
    raise SweepError(f'config file {config_path} does not exist')
  spec = importlib.util.spec_from_file_location('_sweep_config', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'sweep'):
    raise SweepError(f'{config_path} defines no sweep(); add one that returns '
                     'override dicts (see nin_jax/sweeps.py)')
  trials = list(module.sweep())
  if not trials:
    raise SweepError(f'sweep() in {config_path} yields no trials')
  for i, t in enumerate(trials):
    if not isinstance(t, dict):
      raise SweepError(f'sweep() trial {i} is {type(t).__name__}, not a dict of overrides')
  return [{_key(k): v for k, v in t.items()} for t in trials]


def _flat_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for k, v in config.items():
    if hasattr(v, 'items'):
      keys += _flat_keys(v, f'{prefix}{k}.')
    else:
      keys.append(f'{prefix}{k}')
  return keys


def apply_overrides(config, overrides: dict):
  """A copy of the (locked) config with dotted overrides set; SweepError if one can't be."""
  config = copy.deepcopy(config)
  known = _flat_keys(config)
  for key, value in overrides.items():
    if key not in known:
      close = difflib.get_close_matches(key, known, n=3)
      hint = f'; did you mean {" or ".join(close)}?' if close else ''
      raise SweepError(f'sweep key {key!r} is not in the config{hint}')
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    try:
      node[leaf] = tuple(value) if isinstance(value, list) else value
    except (TypeError, ValueError) as e:
      raise SweepError(f'sweep value {key}={value!r}: {e}') from None
  return config


# ---------------------------------------------------------------------------
# Trials.


@dataclasses.dataclass
class Trial:
  index: int
  name: str
  overrides: dict
  workdir: str
  command: list[str]


# Short names for the keys sweeps vary most, so directory names stay readable.
_ABBREVIATIONS = {'learning_rate': 'lr', 'weight_decay': 'wd', 'batch_size': 'bs',
                  'width_multiplier': 'width', 'dropout_rate': 'dropout',
                  'label_smoothing': 'ls', 'num_epochs': 'epochs'}


def _short_value(value: Any) -> str:
  if isinstance(value, float):
    text = f'{value:.4g}'
  elif isinstance(value, (tuple, list)):
    text = '-'.join(_short_value(v) for v in value) or 'none'
  else:
    text = str(value)
  return re.sub(r'[^A-Za-z0-9.+\-]', '_', text)


def trial_name(index: int, overrides: dict, all_keys: Sequence[str] = ()) -> str:
  """'trial_003_lr=0.1_wd=0.0001': the index, then each override's key=value.

  A key is shortened to its last part (abbreviated) unless two swept keys share it.
  """
  leaves = [k.split('.')[-1] for k in (all_keys or overrides)]
  parts = []
  for key, value in overrides.items():
    leaf = key.split('.')[-1]
    short = _ABBREVIATIONS.get(leaf, leaf) if leaves.count(leaf) <= 1 else key
    parts.append(f'{short}={_short_value(value)}')
  return '_'.join([f'trial_{index:03d}'] + parts)[:200]


def format_flag_value(value: Any) -> str:
  """A value as ml_collections' --config.key= parser reads it back."""
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value) if isinstance(value, (float, bool)) else str(value)


def trial_command(trainer: str, config_path: str, workdir: str, base_args: Sequence[str],
                  overrides: dict, *, python: str = sys.executable) -> list[str]:
  """The experiment's command line for one trial (what runs, and what --dry_run prints)."""
  return ([python, os.path.abspath(trainer), f'--config={os.path.abspath(config_path)}',
           f'--workdir={os.path.abspath(workdir)}', *base_args] +
          [f'--config.{k}={format_flag_value(v)}' for k, v in overrides.items()])


def make_trials(trials: Sequence[dict], sweep_dir: str, command: Callable[[str, dict], list[str]],
                names: Sequence[str] | None = None) -> list[Trial]:
  all_keys = list(dict.fromkeys(k for t in trials for k in t))
  out = []
  for i, overrides in enumerate(trials):
    name = names[i] if names else trial_name(i, overrides, all_keys)
    workdir = os.path.join(os.path.abspath(sweep_dir), name)
    out.append(Trial(i, name, dict(overrides), workdir, command(workdir, overrides)))
  return out


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(tmp, path)  # A runner killed mid-write leaves the old file whole.


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, FINAL_METRICS_FILE))


def _error_tail(log_path: str, lines: int = 20) -> str:
  try:
    with open(log_path, errors='replace') as f:
      text = [l.rstrip() for l in f if l.strip()]
  except OSError:
    return ''
  return '\n'.join(text[-lines:])


def run_trials(trials: Sequence[Trial], *, base_args: Sequence[str] = (),
               env: dict | None = None, stream=sys.stdout) -> dict[str, str]:
  """Runs the trials one after another; returns {name: status}.

  Each trial is the experiment's command line in a fresh process, not a call of
  train.train_and_evaluate in this one: a trial that crashes hard (XLA abort,
  OOM kill, a hung device) or leaves JAX state behind cannot take the sweep
  with it, every trial starts from a clean JAX, and what runs here is exactly
  what --dry_run prints for a cluster queue. The price, a few seconds of
  startup per trial, is nothing against a real trial.
  """
  # Check every trial directory first: a changed sweep must not half-run.
  records = {}
  for trial in trials:
    recorded = _read_json(os.path.join(trial.workdir, OVERRIDES_FILE))
    record = {'index': trial.index, 'overrides': json.loads(json.dumps(trial.overrides, default=str)),
              'base_overrides': list(base_args)}
    if recorded is not None and (recorded.get('overrides'), recorded.get('base_overrides')) != (
        record['overrides'], record['base_overrides']):
      raise SweepError(
          f'{trial.workdir} holds a trial with other overrides ({recorded.get("overrides")}, '
          f'base {recorded.get("base_overrides")}); the sweep or its --config.* flags '
          'changed. Use a new --workdir, or delete that trial directory.')
    records[trial.name] = record
  statuses = {}
  for trial in trials:
    os.makedirs(trial.workdir, exist_ok=True)
    _write_json(os.path.join(trial.workdir, OVERRIDES_FILE), records[trial.name])
    prefix = f'[{trial.index + 1}/{len(trials)}] {trial.name}'
    if is_done(trial.workdir):
      print(f'{prefix}: finished before, skipped', file=stream, flush=True)
      statuses[trial.name] = DONE
      continue
    print(f'{prefix}: running (log: {os.path.join(trial.workdir, LOG_FILE)})',
          file=stream, flush=True)
    t0 = time.time()
    returncode = _run_logged(trial.command, os.path.join(trial.workdir, LOG_FILE), env)
    wall = time.time() - t0
    log = os.path.join(trial.workdir, LOG_FILE)
    if returncode == 0 and is_done(trial.workdir):
      status = {'status': DONE, 'returncode': 0, 'wall_s': wall}
    elif returncode == 0:  # Stopped early (preempted): rerunning resumes it.
      status = {'status': INCOMPLETE, 'returncode': 0, 'wall_s': wall}
    else:
      status = {'status': FAILED, 'returncode': returncode, 'wall_s': wall,
                'error_tail': _error_tail(log)}
    _write_json(os.path.join(trial.workdir, STATUS_FILE), status)
    statuses[trial.name] = status['status']
    summary = f'{prefix}: {status["status"]} in {wall:.0f}s'
    if status['status'] == FAILED:
      summary += f' (exit {returncode}): {_short_error(status["error_tail"])}'
    print(summary, file=stream, flush=True)
  return statuses


def _run_logged(command: list[str], log_path: str, env: dict | None) -> int:
  """Runs command with stdout+stderr appended to log_path; SIGTERM is passed on.

  Passing SIGTERM on lets a preempted sweep's running trial checkpoint (the
  train loop saves and stops on SIGTERM) before the runner exits.
  """
  with open(log_path, 'a') as log:
    log.write(f'\n$ {shlex.join(command)}\n')
    log.flush()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    previous = None

    def forward(signum, frame):
      proc.send_signal(signum)
    try:
      previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # Not the main thread.
      previous = None
    try:
      return proc.wait()
    except KeyboardInterrupt:
      proc.send_signal(signal.SIGTERM)
      proc.wait()
      raise
    finally:
      if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _short_error(tail: str) -> str:
  """The line of a log tail that says what went wrong, for one table cell."""
  lines = [l for l in (tail or '').splitlines() if l.strip()]
  for line in reversed(lines):
    if line.startswith('error:') or re.match(r'^\w+(Error|Exception)\b', line):
      return line.strip()[:300]
  return lines[-1].strip()[:300] if lines else ''


# ---------------------------------------------------------------------------
# Results.


def trial_dirs(sweep_dir: str) -> list[str]:
  """The trial directories under a sweep workdir (those with overrides.json), in order."""
  if not os.path.isdir(sweep_dir):
    raise SweepError(f'sweep workdir {sweep_dir} does not exist')
  found = []
  for name in os.listdir(sweep_dir):
    record = _read_json(os.path.join(sweep_dir, name, OVERRIDES_FILE))
    if record is not None:
      found.append((record.get('index', 0), name))
  return [os.path.join(sweep_dir, name) for _, name in sorted(found)]


def last_scalars(workdir: str) -> dict[str, float]:
  """The last logged value of every scalar, then final_metrics.json on top."""
  values: dict[str, float] = {}
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      for line in f:
        if line.strip():
          try:
            values.update(json.loads(line))
          except ValueError:  # A line cut short by a kill.
            pass
  except OSError:
    pass
  values.pop('time', None)
  values.update(_read_json(os.path.join(workdir, FINAL_METRICS_FILE)) or {})
  return values


def collect(sweep_dir: str) -> list[dict]:
  """One row per trial: name, overrides, status, scalars, wall time, error."""
  rows = []
  for workdir in trial_dirs(sweep_dir):
    record = _read_json(os.path.join(workdir, OVERRIDES_FILE)) or {}
    status = _read_json(os.path.join(workdir, STATUS_FILE)) or {}
    state = DONE if is_done(workdir) else status.get('status') or (
        INCOMPLETE if os.path.exists(os.path.join(workdir, 'metrics.jsonl')) else PENDING)
    rows.append({'name': os.path.basename(workdir), 'workdir': workdir,
                 'index': record.get('index'), 'overrides': record.get('overrides', {}),
                 'status': state, 'scalars': last_scalars(workdir),
                 'wall_s': status.get('wall_s'),
                 'error': _short_error(status.get('error_tail', '')) if state == FAILED else ''})
  return rows


def lower_is_better(metric: str) -> bool:
  return any(w in metric for w in ('loss', 'error'))


def sort_rows(rows: list[dict], metric: str) -> list[dict]:
  """Done trials by the metric (best first), then the rest in trial order."""
  sign = 1 if lower_is_better(metric) else -1
  scored = [r for r in rows if r['status'] == DONE and metric in r['scalars']]
  rest = [r for r in rows if r not in scored]
  return sorted(scored, key=lambda r: sign * r['scalars'][metric]) + rest


def check_metric(rows: list[dict], metric: str) -> None:
  done = [r for r in rows if r['status'] == DONE]
  if done and not any(metric in r['scalars'] for r in done):
    available = sorted({k for r in done for k in r['scalars']})
    raise SweepError(f'metric {metric!r} is in no finished trial; choose one of {available}')


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return '' if value is None else str(value)


def write_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], md_path: str,
                csv_path: str, *, title: str = '') -> None:
  """The same rows as a Markdown table and a CSV file (CSV keeps full precision)."""
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows([['' if v is None else v for v in row] for row in rows])

  def md(v):
    return _cell(v).replace('|', '\\|').replace('\n', ' ')
  lines = ([f'{title}\n'] if title else []) + [
      '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(md(v) for v in row) + ' |' for row in rows]
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_report(sweep_dir: str, metric: str = 'test/accuracy') -> dict[str, str]:
  """results.md, results.csv (sorted by metric) and results.png in sweep_dir."""
  rows = collect(sweep_dir)
  if not rows:
    raise SweepError(f'no trials in {sweep_dir} (no */{OVERRIDES_FILE}); run the sweep first')
  check_metric(rows, metric)
  rows = sort_rows(rows, metric)
  keys = list(dict.fromkeys(k for r in rows for k in r['overrides']))
  extra = [m for m in ('test/accuracy', 'test/loss', 'train/loss', 'train/accuracy')
           if m != metric and any(m in r['scalars'] for r in rows)]
  columns = ['rank', 'trial', *keys, metric, *extra, 'step', 'status', 'wall_s', 'error']
  table = []
  for rank, r in enumerate(rows, 1):
    s = r['scalars']
    table.append([rank if r['status'] == DONE and metric in s else None, r['name'],
                  *[_json_value(r['overrides'].get(k)) for k in keys], s.get(metric),
                  *[s.get(m) for m in extra], s.get('step'), r['status'],
                  None if r['wall_s'] is None else round(r['wall_s'], 1), r['error']])
  paths = {'md': os.path.join(sweep_dir, 'results.md'),
           'csv': os.path.join(sweep_dir, 'results.csv'),
           'png': os.path.join(sweep_dir, 'results.png')}
  counts = {s: sum(r['status'] == s for r in rows) for s in (DONE, FAILED, INCOMPLETE, PENDING)}
  title = (f'Sweep {os.path.basename(os.path.abspath(sweep_dir))}: {len(rows)} trials ('
           + ', '.join(f'{n} {s}' for s, n in counts.items() if n) + f'), sorted by {metric} '
           f'({"lower" if lower_is_better(metric) else "higher"} is better)')
  write_table(columns, table, paths['md'], paths['csv'], title=title)
  plot_metric(rows, keys, metric, paths['png'])
  return paths


def read_text(path: str) -> str:
  with open(path) as f:
    return f.read()


def _json_value(v):
  return format_flag_value(v) if isinstance(v, (list, tuple)) else v


def plot_metric(rows: list[dict], keys: Sequence[str], metric: str, png_path: str) -> str:
  """One panel per swept key: the metric of each finished trial against its value."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  done = [r for r in rows if r['status'] == DONE and metric in r['scalars']]
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
      labels = sorted({_cell(_json_value(x)) for x in xs})
      ax.scatter([labels.index(_cell(_json_value(x))) for x in xs], ys, zorder=3)
      ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  failed = sum(r['status'] == FAILED for r in rows)
  fig.suptitle(f'{os.path.basename(os.path.dirname(png_path))}: {len(done)} finished'
               + (f', {failed} failed (not shown)' if failed else ''))
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
  return png_path


# ---------------------------------------------------------------------------
# The command line's work (experiments/sweep.py parses flags and calls this).


def base_override_args(argv: Sequence[str]) -> list[str]:
  """The --config.key=value flags of a command line, to pass on to every trial."""
  args = []
  for arg in argv:
    if arg.startswith(('--config.', '-config.')):
      if '=' not in arg:
        raise SweepError(f'write {arg} as {arg}=VALUE (one argument), so it can be '
                         'passed on to every trial')
      args.append('--' + arg.lstrip('-'))
  return args


def parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
  """absl flag parsing (app.run's flags_parser) with a bad flag or override as one message.

  config_flags applies --config.* overrides while parsing; an unknown key or a
  value of the wrong type would otherwise end in a chained traceback.
  """
  from absl import flags
  try:
    return flags.FLAGS(list(argv))
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    message, innermost = e, e
    while isinstance(message, BaseException) and message.args:
      innermost = message
      message = message.args[0]  # config_dict wraps a KeyError in an AttributeError
    message = str(message).replace('\n', ' ')
    if len(message) > 1 and message[0] == message[-1] and message[0] in '\'"':
      message = message[1:-1]  # KeyError's repr quotes
    if isinstance(innermost, KeyError):
      message = f'the config has no field {message!r}'

    print(f'error: bad flag or --config override: {message}', file=sys.stderr, flush=True)
    sys.exit(2)


def default_trainer(config_path: str, experiments_dir: str) -> str:
  """experiments/<config name>.py if there is one; any experiment script takes --config."""
  own = os.path.join(experiments_dir, os.path.basename(config_path))
  return own if os.path.isfile(own) else os.path.join(experiments_dir, 'fashion_mnist.py')


def main(*, config, config_path: str | None, workdir: str, argv: Sequence[str],
         trainer: str, metric: str, dry_run: bool, report_only: bool,
         stream=sys.stdout) -> int:
  """Dry-runs, runs or reports a sweep; returns the number of trials not done."""
  if report_only:
    paths = write_report(workdir, metric)
    print(read_text(paths['md']), file=stream)
    print(f'wrote {paths["md"]}, {paths["csv"]}, {paths["png"]}', file=stream)
    return 0
  if config is None or not config_path:
    raise SweepError('--config is required (unless --report_only)')
  base_args = base_override_args(argv)
  overrides = load_sweep(config_path)
  for trial in overrides:  # Every key and type checked before any trial runs.
    apply_overrides(config, trial)
  trials = make_trials(
      overrides, workdir,
      lambda wd, o: trial_command(trainer, config_path, wd, base_args, o))
  if dry_run:
    for t in trials:
      print(shlex.join(t.command), file=stream)
    return 0
  statuses = run_trials(trials, base_args=base_args, stream=stream)
  paths = write_report(workdir, metric)
  print(read_text(paths['md']), file=stream)
  print(f'wrote {paths["md"]}, {paths["csv"]}, {paths["png"]}', file=stream)
  return sum(s != DONE for s in statuses.values())


def run_command(define_flags: Callable[[], None], run: Callable[[], int],
                unit: str) -> None:
  """The __main__ of experiments/sweep.py and ablation_head.py.

  Defines the flags, runs `run()` (which returns how many `unit`s did not
  finish), and turns user errors into one `error: …` line with exit status 2.
  """
  from absl import app
  from nin_jax import cli
  try:
    define_flags()
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    print(f'error: bad --config override: {e}', file=sys.stderr, flush=True)
    sys.exit(2)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
      not_done = run()
    except (SweepError, *cli.USER_ERRORS) as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)
    if not_done:
      print(f'{not_done} {unit}(s) failed or did not finish; rerun the same command to retry.')
      sys.exit(1)
  app.run(main, flags_parser=parse_flags_or_exit)
