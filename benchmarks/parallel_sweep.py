#!/usr/bin/env python
"""K trials of one small Fashion-MNIST sweep, `--parallel=K` against `--parallel=1`.

    python benchmarks/parallel_sweep.py [--k=8] [--steps=200] [--width=0.25] \\
        [--workdir=/tmp/parallel_sweep]

Runs nin-sweep (experiments/sweep.py) twice on the same K trials, each time in a
fresh workdir: the quickstart config (nin_jax/configs/fashion_mnist.py, batch
128) at model.width_multiplier=W, stopped after max_steps=S, K learning rates
each with its own seed (trials of one program). Prints each run's wall time and
trials per hour, their ratio (the issue's goal: --parallel=K at most 0.8× the
sequential wall time), and whether every trial's final metrics agree between
the two (on one CPU device a group's trial is bit-identical to its own run).
A benchmark command, not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP_CONFIG = '''
import importlib.util
from nin_jax.research import sweeps

_spec = importlib.util.spec_from_file_location('fashion_mnist', {config!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
get_config = _base.get_config

def sweep():
  return sweeps.zip_(**{{'optim.learning_rate': {rates!r}, 'seed': {seeds!r}}})
'''


def write_sweep_config(path: str, k: int) -> None:
  rates = tuple(round(0.01 * 10 ** (i / max(k - 1, 1)), 5) for i in range(k))  # 0.01..0.1
  with open(path, 'w') as f:
    f.write(SWEEP_CONFIG.format(config=os.path.join(REPO, 'nin_jax', 'configs',
                                                    'fashion_mnist.py'),
                                rates=rates, seeds=tuple(range(k))))


def run_sweep(config_path: str, workdir: str, parallel: int, args) -> float:
  """Wall seconds of one nin-sweep, from its command line to its report."""
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, os.path.join(REPO, 'experiments', 'sweep.py'),
             f'--config={config_path}', f'--workdir={workdir}', f'--parallel={parallel}',
             f'--config.model.width_multiplier={args.width}', f'--config.max_steps={args.steps}']
  env = {**os.environ, 'PYTHONPATH': REPO}
  t0 = time.perf_counter()
  proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    sys.exit(f'error: {" ".join(command)} exited {proc.returncode}:\n{proc.stdout[-2000:]}'
             f'{proc.stderr[-2000:]}')
  return wall


def final_metrics(workdir: str) -> dict:
  out = {}
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name, 'final_metrics.json')
    if os.path.exists(path):
      with open(path) as f:
        out[name] = json.load(f)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--k', type=int, default=8, help='Trials (and --parallel).')
  parser.add_argument('--steps', type=int, default=200, help='max_steps of every trial.')
  parser.add_argument('--width', type=float, default=0.25, help='model.width_multiplier.')
  parser.add_argument('--workdir', default='/tmp/parallel_sweep')
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  config_path = os.path.join(args.workdir, 'sweep_config.py')
  write_sweep_config(config_path, args.k)
  print(f'{args.k} trials of fashion_mnist (width_multiplier {args.width}, batch 128, '
        f'max_steps {args.steps}; learning rates 0.01..0.1, seeds 0..{args.k - 1})', flush=True)
  walls = {}
  for parallel in (args.k, 1):
    walls[parallel] = run_sweep(config_path, os.path.join(args.workdir, f'parallel_{parallel}'),
                                parallel, args)
    print(f'--parallel={parallel}: {walls[parallel]:.1f} s wall, '
          f'{3600 * args.k / walls[parallel]:.1f} trials/hour', flush=True)
  print(f'ratio --parallel={args.k} / --parallel=1: {walls[args.k] / walls[1]:.2f}× the wall time '
        '(goal ≤ 0.80×)')
  same = (final_metrics(os.path.join(args.workdir, f'parallel_{args.k}')) ==
          final_metrics(os.path.join(args.workdir, 'parallel_1')))
  print(f'every trial\'s final metrics identical in both: {same}')


if __name__ == '__main__':
  main()
