"""Shared helpers: a tiny Fashion-MNIST run and the command line in a subprocess."""

import json
import os
import subprocess
import sys

import pytest

import nin_jax

# The tests run in-process what the entry points run: with nin_jax's process
# settings (XLA:CPU flags, the gs:// backend), applied before jax starts.
nin_jax.configure_process()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST = '/usr/share/datasets/fashion-mnist'

# A run small enough for a 2-core CI machine: 1/8-width MNIST NIN, 512 real images.
TINY = {
    'dataset.train_subset': 512,
    'dataset.test_subset': 300,
    'model.width_multiplier': 0.125,
    'optim.batch_size': 64,
    'optim.schedule': 'constant',
    'optim.learning_rate': 0.05,
    'num_epochs': 2.0,
    'log_every_steps': 4,
    'checkpoint_every_steps': 4,
    'eval_batch_size': 128,
    'write_plots': False,
}


def _torch_importable() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


# Tests of the PyTorch peer (nin_jax/research/torch_nin.py). `make test` installs torch
# (the `test` extra), so they run there; they skip, saying
# why, only where torch is not installed.
requires_torch = pytest.mark.skipif(
    not _torch_importable(),
    reason="needs PyTorch for the benchmark peer: pip install -e '.[test]' "
           '(make test installs it)')


def make_tiny_config(**overrides):
  """The Fashion-MNIST quickstart config shrunk by TINY (plus any overrides), locked."""
  from nin_jax.configs import fashion_mnist
  config = fashion_mnist.get_config()
  for key, value in {**TINY, **overrides}.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config


@pytest.fixture
def tiny_config():
  return make_tiny_config


def run_cli(script, workdir, overrides=(), *, devices=1, extra_args=(), env=None,
            timeout=600):
  """Runs experiments/<script> in a fresh process; returns CompletedProcess."""
  args = [sys.executable, os.path.join(REPO, 'experiments', script)]
  if workdir is not None:
    args.append(f'--workdir={workdir}')
  args += [f'--config.{k}={v}' for k, v in dict(overrides).items()] + list(extra_args)
  # TF_ENABLE_ONEDNN_OPTS=1: TensorFlow starts as it does by default on CPUs with
  # AVX-512 VNNI/BF16 (Zen 4, Sapphire Rapids), logging its oneDNN line; on any CPU,
  # so the tests of what a user sees hold on every machine CI may get.
  full_env = {**os.environ, 'PYTHONPATH': REPO, 'TF_ENABLE_ONEDNN_OPTS': '1', **(env or {})}
  full_env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  full_env['JAX_PLATFORMS'] = 'cpu'
  return subprocess.run(args, capture_output=True, text=True, env=full_env,
                        timeout=timeout, cwd=REPO)


def read_jsonl(path):
  """Records of a JSONL file, local or in a bucket."""
  from etils import epath
  return [json.loads(line) for line in epath.Path(path).read_text().splitlines()
          if line.strip()]


@pytest.fixture(scope='session')
def trained_tiny_run(tmp_path_factory):
  """(workdir, config) of one finished tiny Fashion-MNIST run (8 steps), shared."""
  from nin_jax.train import loop as train
  workdir = tmp_path_factory.mktemp('tiny_run')
  config = make_tiny_config(num_epochs=1.0)
  train.train_and_evaluate(config, str(workdir))
  return workdir, config
