"""Sweeps: trials written next to the config they sweep, run as ordinary runs.

A config file may define `sweep()`, returning (or yielding) override dicts with
dotted keys, built with the helpers here:

    def sweep():
      return sweeps.product(
          sweeps.grid(**{'optim.learning_rate': (0.03, 0.1, 0.3)}),
          sweeps.zip_(optim__weight_decay=(0, 1e-4), seed=(0, 1)))

(`a__b` in a keyword is the key `a.b`, for configs written without `**{}`.)

`main` (what experiments/sweep.py and nin-sweep call) runs each trial as the
experiment's own command line in a fresh process, in
`<sweep workdir>/trial_<i>_<key=value...>/` (nin_jax/research/trials.py), then tables
and plots the results (nin_jax/research/sweep_report.py). The sweep workdir may be
local or gs://.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import os
import shlex
import sys
from typing import Any, Callable, Iterable, Sequence

from nin_jax.train import config_file


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


def random_search(n: int, seed: int = 0, **distributions: Distribution | Sequence[Any]) -> list[dict]:
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
  module = config_file.load(config_path, '_sweep_config')
  if not hasattr(module, 'sweep'):
    raise SweepError(f'{config_path} defines no sweep(); add one that returns '
                     'override dicts (see nin_jax/research/sweeps.py)')
  with config_file.users_code(config_path):  # An exception in sweep() is one line.
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
# The sweep command's work (experiments/sweep.py and nin-sweep parse flags and call this).


def main(*, config, config_path: str | None, workdir: str, argv: Sequence[str],
         trainer: str, metric: str, dry_run: bool, report_only: bool,
         stream=sys.stdout) -> int:
  """Dry-runs, runs or reports a sweep; returns the number of trials not done."""
  from nin_jax.research import sweep_report
  from nin_jax.research import trials as trials_lib
  if not report_only:
    if config is None or not config_path:
      raise SweepError('--config is required (unless --report_only)')
    base_args = trials_lib.base_override_args(argv)
    overrides = load_sweep(config_path)
    for trial in overrides:  # Every key and type checked before any trial runs.
      apply_overrides(config, trial)
    trials = trials_lib.make_trials(
        overrides, workdir,
        lambda wd, o: trials_lib.trial_command(trainer, config_path, wd, base_args, o))
    if dry_run:
      for t in trials:
        print(shlex.join(t.command), file=stream)
      return 0
    statuses = trials_lib.run_trials(trials, base_args=base_args, stream=stream)
  paths = sweep_report.write_report(workdir, metric)
  print(paths['md'].read_text(), file=stream)
  print(f'wrote {paths["md"]}, {paths["csv"]}, {paths["png"]}', file=stream)
  return 0 if report_only else sum(s != trials_lib.DONE for s in statuses.values())
