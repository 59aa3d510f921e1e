"""k train steps per dispatch: the same training as k single steps, with every
log, eval, checkpoint and resume step where it would be; where the data live."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config, read_jsonl
from nin_jax.runtime import checkpoint
from nin_jax.train import config as config_lib
from nin_jax.train import steps_per_call
from nin_jax.train import train_step
from nin_jax.train import loop as train

pytestmark = pytest.mark.core


def test_chunks_end_exactly_at_every_boundary():
  # k = 8; logs every 5, checkpoints every 6, a test pause at 9, 13 steps in all.
  plan, step = [], 0
  while step < 13:
    n = steps_per_call.next_chunk(step, 8, 13, periods=(5, 6), stops={9})
    plan.append(n)
    step += n
  ends = np.cumsum(plan).tolist()
  assert {5, 6, 9, 10, 12, 13} <= set(ends)
  assert ends == [4, 5, 6, 8, 9, 10, 12, 13]  # the largest chunk that fits, each time
  # With no boundary near, chunks are k long; lengths are k and powers of two below it.
  assert steps_per_call.next_chunk(0, 32, 1000, periods=(100,)) == 32
  assert steps_per_call.chunk_sizes(32) == (32, 16, 8, 4, 2, 1)
  assert steps_per_call.chunk_sizes(12) == (12, 8, 4, 2, 1)
  assert steps_per_call.next_chunk(96, 32, 1000, periods=(100,)) == 4


def test_auto_choices():
  assert steps_per_call.steps_per_dispatch(0, True, 'gpu') == steps_per_call.AUTO_STEPS_PER_DISPATCH > 1
  assert steps_per_call.steps_per_dispatch(0, True, 'cpu') == 1
  assert steps_per_call.steps_per_dispatch(0, False, 'tpu') == 1
  assert steps_per_call.steps_per_dispatch(8, False, 'cpu') == 8
  gib = 2 ** 30
  assert steps_per_call.fits_on_device(int(0.6 * gib), 141 * gib)      # CIFAR-10 on an H200
  assert not steps_per_call.fits_on_device(20 * gib, 16 * gib)
  assert not steps_per_call.fits_on_device(1, None)                    # size unknown: stream
  config = config_lib.base_config()
  assert config.dataset.on_device is None                        # auto by default
  assert not steps_per_call.data_on_device(config.dataset, None, 'cpu')
  config.dataset.on_device = True
  assert steps_per_call.data_on_device(config.dataset, None, 'cpu')


def test_negative_steps_per_dispatch_is_refused():
  config = config_lib.base_config()
  config.steps_per_dispatch = -1
  with pytest.raises(ValueError, match='config.steps_per_dispatch=-1'):
    config_lib.validate(config)


def _max_abs_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))


def test_k_steps_in_one_call_equal_k_single_steps():
  # Dropout, translation and flips on: their keys come from (seed, step).
  config = make_tiny_config(**{'augment.translate': 2, 'augment.flip': True,
                               'model.dropout_rate': 0.3, 'optim.batch_size': 16})
  state, statics = train_step.create_train_state(config, 10, (28, 28, 1), 8, 100)
  rng = np.random.default_rng(0)
  data = {'image': jnp.asarray(rng.standard_normal((64, 28, 28, 1), np.float32)),
          'label': jnp.asarray(rng.integers(0, 10, 64).astype(np.int32))}
  index = jnp.asarray(np.stack([rng.permutation(64)[:16] for _ in range(4)]), jnp.int32)
  single = jax.jit(functools.partial(train_step.train_step, statics))

  def four_single_steps(state):
    sums = train_step.zero_train_sums()
    for i in range(4):
      state, sums = single(state, sums, {'index': index[i]}, data)
    return state, sums

  one_by_one = four_single_steps(state)
  in_one_call = jax.jit(functools.partial(train_step.train_steps, statics))(
      state, train_step.zero_train_sums(), {'index': index}, data)
  assert int(in_one_call[0].step) == 4
  np.testing.assert_array_equal(in_one_call[1]['count'], one_by_one[1]['count'])
  np.testing.assert_array_equal(in_one_call[1]['correct'], one_by_one[1]['correct'])
  # Not bit-exact on XLA:CPU: the loop body compiles with other fusions. The
  # rounding baseline, measured here: the same 4 single steps from weights
  # one ulp up. Measured: scan 1.2e-7, baseline 1.8e-7 (at batch 64 and
  # 8 steps: 6e-6 against 2e-4). A wrong key or batch moves weights by ~1e-2.
  nudged = state.replace(params=jax.tree.map(lambda p: jnp.nextafter(p, jnp.inf),
                                             state.params))
  rounding = _max_abs_diff(four_single_steps(nudged)[0].params, one_by_one[0].params)
  assert _max_abs_diff(in_one_call[0].params, one_by_one[0].params) <= 4 * rounding


def test_resume_with_8_steps_per_dispatch_matches_single_steps(tmp_path):
  # Logs and checkpoints every 4 steps and an eval every 8 (one epoch) cut
  # k = 8 into chunks of 4; the run stops at step 6 (chunks of 4 and 2),
  # resumes (2, then 4) and ends at 12. Without batch norm: the quickstart's
  # batch-norm net amplifies float32 rounding a hundredfold in 8 steps
  # (tests/test_train.py::test_eight_devices_match_one_device).
  base = {'augment.translate': 2, 'model.dropout_rate': 0.3, 'dataset.on_device': True,
          'model.batch_norm': False, 'keep_checkpoints': 10}
  single, chunked = tmp_path / 'single', tmp_path / 'chunked'
  train.train_and_evaluate(make_tiny_config(**base, max_steps=12, steps_per_dispatch=1),
                           str(single))
  first = train.train_and_evaluate(
      make_tiny_config(**base, max_steps=6, steps_per_dispatch=8), str(chunked))
  assert first['step'] == 6
  result = train.train_and_evaluate(
      make_tiny_config(**base, max_steps=12, steps_per_dispatch=8), str(chunked))
  assert result['step'] == 12

  def logged(workdir, key):
    return {r['step']: r[key] for r in read_jsonl(workdir / 'metrics.jsonl') if key in r}
  # The stop at 6 logs, evaluates and saves there too; every other record and
  # checkpoint is at the step the single-step run has it.
  # Train losses at 8 differ by design: the resumed run's sums start at 7.
  for key, steps_to_compare in (('train/loss', (4, 12)), ('test/loss', (8, 12))):
    chunked_log, single_log = logged(chunked, key), logged(single, key)
    assert chunked_log.keys() == single_log.keys() | {6}
    for step in steps_to_compare:
      assert chunked_log[step] == pytest.approx(single_log[step], rel=1e-5)

  def saved(workdir):
    return {int(name) for name in os.listdir(workdir / 'checkpoints') if name.isdigit()}
  assert saved(single) == {4, 8, 12} and saved(chunked) == {4, 6, 8, 12}
  a, b = checkpoint.load_for_inspection(str(single), 12), \
      checkpoint.load_for_inspection(str(chunked), 12)
  diff = _max_abs_diff(a['params'], b['params'])
  # Measured 9.7e-8 (jax 0.10.2) and 1.8e-6 (jax 0.12.1: another XLA, another
  # rounding of the scanned steps). The rounding baseline of the test above (one ulp on
  # the initial weights) moves weights ~1.8e-7 in 4 steps; a wrong key, batch or
  # boundary moves them by ~1e-2.
  assert diff < 1e-5
