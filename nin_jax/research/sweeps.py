"""Sweeps: trials written next to the config they sweep, run as ordinary runs.

A config file may define `sweep()`, returning (or yielding) override dicts with
dotted keys, built with the helpers here:

    def sweep():
      return sweeps.product(
          sweeps.grid(**{'optim.learning_rate': (0.03, 0.1, 0.3)}),
          sweeps.zip_(optim__weight_decay=(0, 1e-4), seed=(0, 1)))

(`a__b` in a keyword is the key `a.b`, for configs written without `**{}`.)

nin-sweep (nin_jax/cli/research_commands.py `run_sweep`) runs each trial as the
experiment's own command line in a fresh process, in
`<sweep workdir>/trial_<i>_<key=value...>/` (nin_jax/research/trials.py), then tables
and plots the results (nin_jax/research/sweep_report.py). The sweep workdir may be
local or gs://.

Trials are chosen on validation data: `validation_holdout` gives every trial
the same validation split held out of training (unless they hold one out
already), and the report ranks by its val/* metrics, test metrics beside them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import os
from typing import Any, Callable, Iterable, Sequence

from nin_jax.data import datasets
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
# Choosing on validation data.

VALIDATION_KEY = 'dataset.validation_per_class_train'
# What a sweep holds out when its trials hold out nothing: a tenth of the
# training split, as many images of every class (CIFAR-10: 500 per class,
# the usual 45,000/5,000 split). Held out before dataset.train_subset cuts.
VALIDATION_FRACTION = 0.1


def validation_holdout(config, trials: Sequence[dict]) -> dict:
  """The override that gives every trial a validation split, or {} if they have one.

  `config` carries the command line's overrides, each trial its own. Trials
  are ranked against each other, so they must hold out the same images.
  """
  sizes = {apply_overrides(config, t).dataset.validation_per_class_train for t in trials}
  if len(sizes) > 1:
    raise SweepError(f'the trials hold out different validation splits ({VALIDATION_KEY} '
                     f'in {sorted(sizes)}); ranking compares them on one: set it once')
  if sizes.pop():
    return {}
  name = config.dataset.name
  if name in datasets.STREAMED:
    raise SweepError(f'{name} is streamed and cannot hold out validation images; rank '
                     'on its test split with --metric=test/accuracy --select_on_test')
  info = datasets.DATASETS.get(name)
  if info is None:  # The trials' own config check names the problem.
    return {}
  per_class = int(info.num_examples['train'] * VALIDATION_FRACTION) // info.num_classes
  return {VALIDATION_KEY: per_class}
