"""The benchmark harness measures the real train step and compares with PyTorch."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, requires_torch, run_cli
from nin_jax.research import throughput
from nin_jax.train import config as config_lib
from nin_jax.model import nin
from nin_jax.model import architectures


def small_config(preset='cifar10'):
  config = config_lib.base_config()
  config.model.preset = preset
  config.model.width_multiplier = 0.125
  config.optim.batch_size = 8
  return config


def test_harness_reports_throughput_and_mfu():
  result = throughput.compare(small_config(), steps=2, warmup=1, peak_tflops=1.0)
  assert result['images_per_s'] > 0 and result['compile_s'] > 0
  assert result['input_images_per_s'] > 0
  # FLOPs are the full preset's (stated per image), not the scaled test net's.
  assert result['train_gflop_per_image'] == pytest.approx(
      nin.train_flops_per_example(architectures.cifar10()) / 1e9)
  assert result['mfu'] == pytest.approx(result['achieved_tflops'] / 1.0)


@requires_torch
def test_ratio_against_the_pytorch_peer():
  config = small_config()
  config.model.width_multiplier = 1.0  # the peer is the paper's network
  result = throughput.compare(config, steps=2, warmup=1, compare_torch=True,
                             torch_threads=2)
  assert result['torch_images_per_s'] > 0
  assert result['jax_over_torch'] == pytest.approx(
      result['images_per_s'] / result['torch_images_per_s'])


def test_comparing_a_different_network_is_refused():
  with pytest.raises(ValueError, match='PyTorch peer'):
    throughput.compare(small_config(), compare_torch=True)


@requires_torch
def test_pytorch_peer_is_the_same_network():
  from nin_jax.research import torch_nin
  for preset, params in (('cifar10', 966_986), ('imagenet', 7_595_176)):
    assert sum(p.numel() for p in torch_nin.build_model(preset).parameters()) == params


def test_command_line_prints_json(tmp_path):
  out = tmp_path / 'bench.json'
  proc = run_cli('benchmark.py', None, {'model.width_multiplier': 0.125,
                                        'optim.batch_size': 8},
                 extra_args=['--steps=1', '--warmup=0', f'--output={out}'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(out.read_text())['batch_size'] == 8


def test_host_overhead_compares_the_loop_with_the_compiled_step(tiny_config):
  rows = throughput.host_overhead(tiny_config(), ks=(1, 4), intervals=1,
                                 steps_per_interval=4)
  assert [r['steps_per_dispatch'] for r in rows] == [1, 4]
  for r in rows:
    assert r['loop_step_s'] > 0 and r['compiled_step_s'] > 0
    assert r['overhead'] == pytest.approx(r['loop_step_s'] / r['compiled_step_s'] - 1)


@pytest.mark.core
def test_device_check_smoke_runs_on_cpu(tmp_path):
  # The GPU check's every section at tiny sizes, so it cannot rot before a GPU
  # runs it; each section's JSON is in the output folder, complete.
  out = tmp_path / 'check'
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'benchmarks', 'device_check.py'), '--smoke',
       f'--output_dir={out}'], capture_output=True, text=True, timeout=600, cwd=REPO,
      env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = {name: json.loads((out / f'{name}.json').read_text())
            for name in device_check_sections()}
  assert all(r['complete'] for r in result.values()), result
  assert [(r['dtype'], r['batch_size']) for r in result['nin_cifar']['rows']] == [
      ('bfloat16', 8), ('float32', 8)]
  assert all(r['images_per_s'] > 0 for r in result['nin_cifar']['rows'])
  if _torch_importable():
    assert result['torch_peer']['rows'][0]['torch_images_per_s'] > 0
  assert 0 < result['fashion_mnist']['final_accuracy'] <= 1
  assert [r['mode'] for r in result['trial_groups']['rows']] == ['sequential', 'group']
  assert [r['stepping'] for r in result['trial_groups']['rows']] == ['calls', 'vmap']
  assert result['trial_groups']['trial_steps_ratio'] > 0
  assert 'MFU' in proc.stdout and 'Fashion-MNIST' in proc.stdout
  assert 'trial group / sequential' in proc.stdout


def device_check_budgets() -> list[tuple[str, int]]:
  """`device_check.py --budgets`: device_run.sh's 'install', then the sections in order."""
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'device_check.py'),
                         '--budgets'], capture_output=True, text=True, timeout=60, check=True)
  return [(name, int(s)) for name, s in (line.split() for line in proc.stdout.splitlines())]


def device_check_sections() -> list[str]:
  return [name for name, _ in device_check_budgets()][1:]


def test_device_check_budgets_fit_in_one_ten_minute_device_call():
  budgets = device_check_budgets()
  assert [name for name, _ in budgets] == ['install', 'env', 'nin_cifar', 'torch_peer',
                                           'fashion_mnist', 'trial_groups']
  # 9.5 minutes: a device call's limit is 10, and the machine's start comes first.
  assert sum(s for _, s in budgets) <= 570


def test_peak_is_looked_up_by_device_name():
  sys.path.insert(0, REPO)
  from benchmarks import device_check
  assert device_check.peak_tflops('NVIDIA H200', 'bfloat16') == 989.0
  assert device_check.peak_tflops('NVIDIA H100 80GB HBM3', 'float32') == 67.0
  assert device_check.peak_tflops('cpu', 'bfloat16') is None


def test_torch_tests_skip_with_a_reason_only_without_torch(tmp_path):
  """With torch unimportable the peer's tests skip and say how to install it."""
  import subprocess
  import sys
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text('raise ImportError("no torch here")\n')
  test = 'tests/test_benchmark.py::test_pytorch_peer_is_the_same_network'
  env = {**__import__('os').environ, 'PYTHONPATH': f'{tmp_path}:{REPO}'}
  hidden = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', test], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
  assert '1 skipped' in hidden.stdout and "pip install -e '.[test]'" in hidden.stdout
  if _torch_importable():  # and with torch, it runs
    env['PYTHONPATH'] = REPO
    present = subprocess.run([sys.executable, '-m', 'pytest', '-q', test], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert '1 passed' in present.stdout, present.stdout[-2000:]


def _torch_importable():
  from conftest import _torch_importable as importable
  return importable()
