"""--profile_steps=A:B: a jax.profiler trace of those steps, on training and on the benchmark."""

import glob
import os

import pytest

from conftest import run_cli
from nin_jax.runtime import profiling


def _trace_files(logdir):
  return glob.glob(os.path.join(logdir, 'plugins', 'profile', '*', '*.xplane.pb'))


def test_parse_steps():
  assert profiling.parse_steps('') is None
  assert profiling.parse_steps('3:5') == (3, 5)
  for bad in ('5', '5:3', 'a:b', '-1:2'):
    with pytest.raises(ValueError, match='profile_steps'):
      profiling.parse_steps(bad)


def test_training_writes_a_trace_with_step_annotations(tmp_path):
  workdir = tmp_path / 'run'
  result = run_cli('fashion_mnist.py', workdir,
                   {'dataset.train_subset': 256, 'dataset.test_subset': 64,
                    'model.width_multiplier': 0.125, 'optim.batch_size': 64,
                    'max_steps': 4, 'write_plots': False},
                   extra_args=['--profile_steps=1:3'])
  assert result.returncode == 0, result.stderr[-3000:]
  traces = _trace_files(workdir / 'profile')
  assert len(traces) == 1, os.listdir(workdir)
  assert f'written to {workdir / "profile"}' in result.stdout
  data = open(traces[0], 'rb').read()
  assert b'train' in data and b'step_num' in data  # the per-step annotations
  summary = profiling.summarize(workdir / 'profile')  # ms per step by XLA op kind
  assert summary and all(ms >= 0 and n > 0 for _, ms, n in summary)


def test_benchmark_writes_a_trace(tmp_path):
  result = run_cli('benchmark.py', None, {'model.width_multiplier': 0.125,
                                          'optim.batch_size': 8},
                   extra_args=['--steps=1', '--warmup=2', '--profile_steps=1:3',
                               f'--profile_dir={tmp_path / "prof"}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(_trace_files(tmp_path / 'prof')) == 1


def test_the_summary_command_says_what_it_needs(tmp_path, capsys):
  """`python -m nin_jax.runtime.profiling` without a trace: one line, status 2."""
  assert profiling.print_summary([]) == 2
  assert 'usage: python -m nin_jax.runtime.profiling PROFILE_DIR' in capsys.readouterr().err
  assert profiling.print_summary([str(tmp_path)]) == 2
  assert capsys.readouterr().err == f'error: no *.xplane.pb trace under {tmp_path}/plugins/profile\n'
