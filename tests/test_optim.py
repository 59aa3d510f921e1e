"""The optimizer is the authors' update rule: multipliers, decay masks, schedules."""

import jax.numpy as jnp
import numpy as np
import pytest

from nin_jax.train import config as config_lib
from nin_jax.train import optim

ROLES = {'w': 'weight', 'b': 'bias', 'lw': 'last_weight', 'lb': 'last_bias', 'n': 'norm'}


def optim_config(**overrides):
  c = config_lib.base_config().optim
  c.update(overrides)
  return c


def one_step(cfg, params, grads, step_schedule=None):
  tx = optim.create_optimizer(cfg, ROLES, step_schedule or (lambda s: cfg.learning_rate))
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  return updates, tx, state


def test_first_step_is_minus_lr_times_multiplier_times_decayed_gradient():
  cfg = optim_config(learning_rate=0.1, weight_decay=1e-4, momentum=0.9)
  params = {k: jnp.full((3,), 2.0) for k in ROLES}
  grads = {k: jnp.full((3,), 0.5) for k in ROLES}
  updates, _, _ = one_step(cfg, params, grads)
  decayed = 0.5 + 1e-4 * 2.0
  expect = {'w': -0.1 * decayed, 'b': -0.2 * 0.5,        # biases ×2, not decayed
            'lw': -0.01 * decayed, 'lb': -0.02 * 0.5,    # last layer ×0.1
            'n': -0.1 * 0.5}                              # batch norm: no decay
  for k, v in expect.items():
    np.testing.assert_allclose(updates[k], v, rtol=1e-6, err_msg=k)


def test_momentum_applies_after_the_learning_rate_like_caffe():
  # Caffe: v ← m·v + lr_t·g. With lr 1.0 then 0.1, the second update is
  # 0.9·(−1·g) + (−0.1·g) = −1.0·g; optax.sgd's order would give −0.19·g.
  cfg = optim_config(weight_decay=0.0, momentum=0.9)
  schedule = lambda step: jnp.where(step == 0, 1.0, 0.1)
  params, grads = {k: jnp.zeros(()) for k in ROLES}, {k: jnp.ones(()) for k in ROLES}
  tx = optim.create_optimizer(cfg, ROLES, schedule)
  state = tx.init(params)
  _, state = tx.update(grads, state, params)
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['w'], -1.0, rtol=1e-6)


def test_step_schedule_divides_by_ten_twice():
  cfg = optim_config(learning_rate=0.1, schedule='step', decay_epochs=(200.0, 230.0))
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=10, total_steps=2600)
  np.testing.assert_allclose(
      [schedule(0), schedule(1999), schedule(2000), schedule(2299), schedule(2300)],
      [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_cosine_with_warmup():
  cfg = optim_config(learning_rate=0.4, schedule='cosine', warmup_epochs=1.0)
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=100, total_steps=1100)
  np.testing.assert_allclose(schedule(0), 0.004, rtol=1e-6)
  np.testing.assert_allclose(schedule(49), 0.2, rtol=1e-6)
  np.testing.assert_allclose(schedule(99), 0.4, rtol=1e-6)
  np.testing.assert_allclose(schedule(100), 0.4, rtol=1e-6)
  np.testing.assert_allclose(schedule(600), 0.2, rtol=1e-5)
  assert float(schedule(1100)) < 1e-6


@pytest.mark.parametrize('schedule_name', optim.SCHEDULES)
def test_warmup_starts_from_the_same_point_for_every_schedule(schedule_name):
  """Step 0 trains at lr / warmup_steps, the full rate is reached at step warmup - 1."""
  cfg = optim_config(learning_rate=0.4, schedule=schedule_name, warmup_epochs=0.5,
                     decay_epochs=(5.0,))
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=100, total_steps=1000)
  np.testing.assert_allclose([schedule(0), schedule(24), schedule(49)],
                             [0.4 / 50, 0.2, 0.4], rtol=1e-5)


def test_linear_scaling_from_a_reference_batch():
  cfg = optim_config(learning_rate=0.01, batch_size=256, reference_batch_size=64)
  assert optim.base_learning_rate(cfg) == pytest.approx(0.04)
  assert optim.base_learning_rate(optim_config(learning_rate=0.01)) == 0.01


def test_caffe_zoo_last_layer_bias_has_its_own_multiplier():
  # cifar10_caffe's cccp6: blobs_lr 0.1 for weights and biases → bias rate 0.01.
  cfg = optim_config(learning_rate=0.1, weight_decay=0.0, last_layer_bias_lr_mult=0.1)
  params = {k: jnp.zeros((2,)) for k in ROLES}
  updates, _, _ = one_step(cfg, params, {k: jnp.ones((2,)) for k in ROLES})
  np.testing.assert_allclose(updates['lb'], -0.01, rtol=1e-6)
  np.testing.assert_allclose(updates['b'], -0.2, rtol=1e-6)
  np.testing.assert_allclose(updates['lw'], -0.01, rtol=1e-6)


@pytest.mark.parametrize('scope, bias_rates', [
    ('all', [0.2, 0.02, 0.002]),        # Caffe: every rate divided
    ('weights', [0.2, 0.2, 0.2]),       # cuda-convnet README: only epsW divided
])
def test_step_decay_scope(scope, bias_rates):
  cfg = optim_config(learning_rate=0.1, weight_decay=0.0, momentum=0.0,
                     schedule='step', decay_epochs=(1.0, 2.0), decay_scope=scope,
                     last_layer_lr_mult=1.0)
  schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=2, total_steps=6)
  bias_schedule = optim.bias_learning_rate_schedule(cfg, 2, 6)
  assert (bias_schedule is None) == (scope == 'all')
  params = {k: jnp.zeros(()) for k in ROLES}
  grads = {k: jnp.ones(()) for k in ROLES}
  tx = optim.create_optimizer(cfg, ROLES, schedule, bias_schedule)
  state = tx.init(params)
  weights, biases = [], []
  for step in range(6):
    updates, state = tx.update(grads, state, params)
    if step % 2 == 0:
      weights.append(-float(updates['w']))
      biases.append(-float(updates['b']))
  np.testing.assert_allclose(weights, [0.1, 0.01, 0.001], rtol=1e-5)
  np.testing.assert_allclose(biases, bias_rates, rtol=1e-5)
