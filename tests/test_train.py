"""The train loop: learns real data, logs, evaluates every example, resumes exactly,
and runs the same on 1 and 8 devices."""

import glob
import json
import os

import numpy as np
import pytest

from conftest import TINY, read_jsonl, run_cli
from nin_jax.runtime import checkpoint
from nin_jax.train import run_history
from nin_jax.train import loop as train


def restore_raw(workdir, step):
  return checkpoint.load_for_inspection(workdir, step)


def flat(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.core
def test_learns_real_fashion_mnist_and_writes_logs(tiny_config, tmp_path):
  # 1/4-width network, 4096 real training images, two epochs: far above chance.
  config = tiny_config(**{'dataset.train_subset': 4096, 'dataset.test_subset': 1000,
                          'model.width_multiplier': 0.25, 'optim.batch_size': 64,
                          'model.dropout_rate': 0.0,
                          'optim.schedule': 'cosine', 'optim.learning_rate': 0.1,
                          'log_every_steps': 16, 'write_plots': True})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['test/examples'] == 1000          # every test image, once
  assert result['test/accuracy'] > 0.6            # chance is 0.1
  records = read_jsonl(tmp_path / 'metrics.jsonl')
  train_losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert train_losses[-1] < 0.6 * train_losses[0]
  assert all(r['train/images_per_s'] > 0 for r in records if 'train/loss' in r)
  assert any('test/accuracy' in r for r in records)
  assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))
  assert (tmp_path / 'curves.png').stat().st_size > 10_000
  final = json.loads((tmp_path / 'final_metrics.json').read_text())
  assert final['test/accuracy'] == pytest.approx(result['test/accuracy'])
  assert json.loads((tmp_path / 'config.json').read_text())['dataset']['name'] == 'fashion_mnist'


def test_eval_counts_a_partial_last_batch(tiny_config, tmp_path):
  # 300 test images in batches of 128: 128 + 128 + 44 (padded, masked).
  result = train.train_and_evaluate(tiny_config(max_steps=1), str(tmp_path))
  assert result['test/examples'] == 300


@pytest.mark.core
def test_resume_continues_exactly(tiny_config, tmp_path):
  # Dropout and data order are functions of (seed, step): stopping at step 4 and
  # resuming must give bit-identical parameters to an uninterrupted run.
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(tiny_config(max_steps=12), straight)
  first = train.train_and_evaluate(tiny_config(max_steps=4), resumed)
  assert first['step'] == 4
  second = train.train_and_evaluate(tiny_config(max_steps=12), resumed)
  assert second['step'] == 12
  launches = run_history.launch_times(resumed)  # What `python -m nin_jax.train.run_history` lists.
  assert [(t['start_step'], t['end_step']) for t in launches] == [(0, 4), (4, 12)]
  assert all(t['wall_s'] > 0 for t in launches)
  for a, b in zip(flat(restore_raw(straight, 12)), flat(restore_raw(resumed, 12))):
    np.testing.assert_array_equal(a, b)
  # Starting a finished run again trains nothing and reports the same numbers.
  again = train.train_and_evaluate(tiny_config(max_steps=12), straight)
  assert again['step'] == 12 and again['test/loss'] == second['test/loss']


def test_dataset_on_device_trains_exactly_like_the_host_pipeline(tiny_config, tmp_path):
  # Same indices, same augmentation keys: only where the gather happens differs.
  overrides = {'max_steps': 6, 'augment.translate': 2, 'model.dropout_rate': 0.3}
  host = train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / 'host'))
  device = train.train_and_evaluate(
      tiny_config(**overrides, **{'dataset.on_device': True}), str(tmp_path / 'device'))
  for a, b in zip(flat(restore_raw(str(tmp_path / 'host'), 6)['params']),
                  flat(restore_raw(str(tmp_path / 'device'), 6)['params'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert device['test/accuracy'] == pytest.approx(host['test/accuracy'], abs=1e-3)


def test_same_seed_same_run_other_seed_other_run(tiny_config, tmp_path):
  a = train.train_and_evaluate(tiny_config(max_steps=3), str(tmp_path / 'a'))
  b = train.train_and_evaluate(tiny_config(max_steps=3), str(tmp_path / 'b'))
  c = train.train_and_evaluate(tiny_config(max_steps=3, seed=1), str(tmp_path / 'c'))
  assert a['test/loss'] == b['test/loss']
  assert a['test/loss'] != c['test/loss']


def test_eight_devices_match_one_device(tmp_path):
  # The real entry point in fresh processes, with command-line overrides:
  # 8 simulated CPU devices must follow the 1-device run (dropout included).
  overrides = {**TINY, 'max_steps': 8}
  runs = {}
  for devices in (1, 8):
    workdir = tmp_path / f'd{devices}'
    proc = run_cli('fashion_mnist.py', workdir, overrides, devices=devices)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'{devices} cpu device(s)' in proc.stdout
    runs[devices] = workdir
  losses = [[r['train/loss'] for r in read_jsonl(runs[d] / 'metrics.jsonl')
             if 'train/loss' in r] for d in (1, 8)]
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
  # Reductions run in another order on 8 devices. This tiny batch-norm net
  # amplifies float32 rounding: on one device, only swapping the matmul library
  # (Eigen for YNNPACK) moves the weights by 4.8e-3 after these 8 steps. A
  # sharding bug (wrong data, masks or gradients) moves them far more.
  one, eight = restore_raw(str(runs[1]), 8), restore_raw(str(runs[8]), 8)
  for part in ('params', 'batch_stats'):
    for a, b in zip(flat(one[part]), flat(eight[part])):
      np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)


def test_batch_that_does_not_divide_the_devices_is_a_clear_error(tmp_path):
  proc = run_cli('fashion_mnist.py', tmp_path / 'w', {**TINY, 'optim.batch_size': 60},
                 devices=8)
  assert proc.returncode == 2
  assert 'optim.batch_size=60 does not divide across the 8 devices' in proc.stderr
  assert 'Traceback' not in proc.stderr
