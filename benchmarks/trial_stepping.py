#!/usr/bin/env python
"""How a group's trials should step: K calls of one step, or one vmap-ed step.

    python benchmarks/trial_stepping.py [--k=8] [--steps=100] [--width=0.25] [--devices=N]

Trains the same K trials of the quickstart config (nin_jax/configs/fashion_mnist.py,
batch 128, model.width_multiplier=W, K learning rates and seeds, max_steps=S)
twice in this process with research.trial_group.train_group: once calling the
compiled step once per trial, each trial data-parallel over all the devices as
it would be alone ('calls', what a group does on the CPU backend), once
stepping all trials as one vmap-ed program on a ('trial', 'data') mesh ('vmap',
what a group does on an accelerator). --devices=N simulates N CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N, set before jax starts);
they share the host's cores. Prints each one's wall time (data load and
compilation included, the same for both) and their ratio. The choice for each
backend is in trial_group's docstring. A benchmark command, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--k', type=int, default=8, help='Trials in the group.')
  parser.add_argument('--steps', type=int, default=100, help='max_steps of every trial.')
  parser.add_argument('--width', type=float, default=0.25, help='model.width_multiplier.')
  parser.add_argument('--devices', type=int, default=1,
                      help='Simulated CPU devices (set before jax starts).')
  parser.add_argument('--steppings', default='calls,vmap',
                      help='Which to time, comma-separated, in this order.')
  return parser.parse_args()


ARGS = parse_args() if __name__ == '__main__' else None
if ARGS is not None and ARGS.devices > 1:  # XLA reads it when its CPU backend starts.
  os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''),
                                      f'--xla_force_host_platform_device_count={ARGS.devices}'])
  os.environ['JAX_PLATFORMS'] = 'cpu'

import nin_jax  # noqa: E402

nin_jax.configure_process()

import jax  # noqa: E402  (after configure_process: XLA:CPU flags apply at backend start)

from nin_jax.configs import fashion_mnist  # noqa: E402
from nin_jax.research import trial_group  # noqa: E402


def trial_configs(k: int, steps: int, width: float) -> list:
  configs = []
  for i in range(k):
    config = fashion_mnist.get_config()
    config.model.width_multiplier = width
    config.max_steps = steps
    config.optim.learning_rate = round(0.01 * 10 ** (i / max(k - 1, 1)), 5)
    config.seed = i
    config.dataset.test_subset = 1000
    config.write_plots = False
    configs.append(config)
  return configs


def timed_group(configs: list, stepping: str, root: str) -> float:
  workdirs = [os.path.join(root, stepping, f'trial_{i}') for i in range(len(configs))]
  t0 = time.perf_counter()
  results = trial_group.train_group(configs, workdirs, stepping=stepping)
  wall = time.perf_counter() - t0
  failed = [r['name'] for r in results if r['failed']]
  if failed:
    sys.exit(f'error: trials {failed} failed under stepping={stepping}')
  return wall


def main(args: argparse.Namespace) -> None:
  if len(jax.devices()) != args.devices:
    sys.exit(f'error: {len(jax.devices())} devices, not --devices={args.devices}')
  configs = trial_configs(args.k, args.steps, args.width)
  print(f'{args.k} trials × {args.steps} steps, fashion_mnist width {args.width}, batch 128, '
        f'{args.devices} {jax.devices()[0].device_kind} device(s):', flush=True)
  walls = {}
  with tempfile.TemporaryDirectory() as root:
    for stepping in args.steppings.split(','):  # Each printed as it ends.
      walls[stepping] = timed_group(configs, stepping, root)
      print(f'  {stepping:5s}: {walls[stepping]:7.1f} s wall, '
            f'{args.k * args.steps / walls[stepping]:6.1f} trial-steps/s', flush=True)
  if set(walls) == {'calls', 'vmap'}:
    print(f'  vmap / calls: {walls["vmap"] / walls["calls"]:.2f}×')


if __name__ == '__main__':
  main(ARGS)
