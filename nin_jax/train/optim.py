"""The optimizer: the authors' SGD, as their update rule works out, and schedules.

cuda-convnet / Caffe update every parameter as
    v ← momentum·v + lr·lr_mult·(grad + decay_mult·wd·w);   w ← w − v
so the learning rate (and its per-layer multiplier) is applied *before* the
momentum trace. At a learning-rate drop this differs from optax.sgd, which
scales after the trace; the chain below is Caffe's order exactly.

Which rates a step decay divides (optim.decay_scope): 'all' (Caffe's solver,
and this code's default) or 'weights', the cuda-convnet README's "change all
the epsW to one tenth", which leaves the biases' epsB at their initial rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nin_jax.model.nin import (ROLE_BIAS as BIAS, ROLE_LAST_BIAS as LAST_BIAS,
                            ROLE_LAST_WEIGHT as LAST_WEIGHT, ROLE_NORM as NORM,
                            ROLE_WEIGHT as WEIGHT)
from nin_jax.train.config import DECAY_SCOPES, SCHEDULES  # noqa: F401 (callers name them here)


def base_learning_rate(optim: ml_collections.ConfigDict) -> float:
  """The configured rate, linearly rescaled when the config names a reference batch."""
  lr = optim.learning_rate
  if optim.reference_batch_size:
    lr *= optim.batch_size / optim.reference_batch_size
  return lr


def learning_rate_schedule(optim: ml_collections.ConfigDict,
                           steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Step decay at `decay_epochs`, or cosine; both with optional linear warmup."""
  lr = base_learning_rate(optim)
  warmup = int(round(optim.warmup_epochs * steps_per_epoch))
  if optim.schedule == 'step':
    boundaries = {int(round(e * steps_per_epoch)): optim.decay_factor
                  for e in optim.decay_epochs}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  elif optim.schedule == 'constant':
    main = optax.constant_schedule(lr)
  else:
    raise ValueError(f'unknown schedule {optim.schedule!r}; choose one of {SCHEDULES}')
  if not warmup:
    return main
  # Every schedule ramps the same way: step 0 at lr / warmup, the full rate at
  # step warmup - 1. The step schedule keeps absolute boundaries; cosine
  # starts its decay after the warmup.
  ramp = lambda step: jnp.minimum(1.0, (step + 1) / warmup)
  if optim.schedule == 'cosine':
    return lambda step: main(jnp.maximum(step - warmup, 0)) * ramp(step)
  return lambda step: main(step) * ramp(step)


def bias_learning_rate_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int,
                                total_steps: int) -> optax.Schedule | None:
  """The biases' own schedule under decay_scope='weights' (the step decay left out), else None."""
  if optim.get('decay_scope', 'all') == 'all':
    return None
  undecayed = ml_collections.ConfigDict(optim.to_dict())
  undecayed.decay_factor = 1.0
  return learning_rate_schedule(undecayed, steps_per_epoch, total_steps)


def tabulate(schedule: optax.Schedule, total_steps: int):
  """The schedule's rate at every step 0..total_steps-1, as float32 numpy.

  A table indexed by the step is the schedule as a runtime value: one
  compiled step serves trials whatever their rates, decays and warmups.
  """
  steps = jnp.arange(max(total_steps, 1), dtype=jnp.int32)
  # A constant schedule returns one value whatever the step.
  at_every_step = jax.jit(lambda s: jnp.broadcast_to(schedule(s), s.shape))
  return np.asarray(at_every_step(steps), np.float32)


def _scale_by_tree(multipliers) -> optax.GradientTransformation:
  return optax.stateless(
      lambda updates, params: jax.tree.map(lambda u, m: u * m, updates, multipliers))


def last_bias_lr_mult(optim: ml_collections.ConfigDict) -> float:
  """The logits layer's bias multiplier: its own when set (Caffe zoo: 0.1), else
  last_layer_lr_mult × bias_lr_mult (cuda-convnet's epsB = 2 × epsW: 0.2)."""
  own = optim.get('last_layer_bias_lr_mult', -1.0)
  return own if own >= 0 else optim.last_layer_lr_mult * optim.bias_lr_mult


def create_optimizer(optim: ml_collections.ConfigDict, roles,
                     schedule: optax.Schedule,
                     bias_schedule: optax.Schedule | None = None, *,
                     weight_decay: float | jax.Array | None = None,
                     momentum: float | jax.Array | None = None
                     ) -> optax.GradientTransformation:
  """SGD with momentum, per-layer lr multipliers and L2 decay on weights only.

  Args:
    optim: config.optim.
    roles: a pytree like the params whose leaves are the role strings above.
    schedule: step → base learning rate.
    bias_schedule: step → the biases' base rate, when it differs
      (`bias_learning_rate_schedule`); None: biases follow `schedule`.
    weight_decay, momentum: in place of optim's, e.g. as runtime values (one
      compiled step for trials of several values); the state is the same.
  """
  lr_mult = {
      WEIGHT: 1.0,
      BIAS: optim.bias_lr_mult,
      LAST_WEIGHT: optim.last_layer_lr_mult,
      LAST_BIAS: last_bias_lr_mult(optim),
      NORM: 1.0,
  }
  multipliers = jax.tree.map(lambda r: lr_mult[r], roles)
  decay_mask = jax.tree.map(lambda r: r in (WEIGHT, LAST_WEIGHT), roles)
  if bias_schedule is None:
    scale_by_rate = optax.scale_by_learning_rate(schedule)
  else:
    scale_by_rate = optax.multi_transform(
        {'weights': optax.scale_by_learning_rate(schedule),
         'biases': optax.scale_by_learning_rate(bias_schedule)},
        jax.tree.map(lambda r: 'biases' if r in (BIAS, LAST_BIAS) else 'weights', roles))
  return optax.chain(
      optax.add_decayed_weights(
          optim.weight_decay if weight_decay is None else weight_decay, mask=decay_mask),
      _scale_by_tree(multipliers),
      scale_by_rate,
      optax.trace(decay=optim.momentum if momentum is None else momentum,
                  nesterov=optim.nesterov),
  )
