"""A run's compiled calls, built once with explicit shardings on the data-parallel mesh.

Each takes the run's Hyperparams (train_step.Hyperparams) as an argument, not a
constant: trials that differ only in them share these calls
(nin_jax/research/trial_group.py), and a trial alone runs the very same program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax

from nin_jax.runtime import sharding
from nin_jax.train import train_step


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """A run's compiled calls: one step, k steps, one eval batch, zeroed metric sums.

  one/many(state, sums, batch(es), device_data, hparams); eval(state, batch, hparams).
  """
  one: Callable
  many: Callable
  eval: Callable
  zero_sums: Callable

  @classmethod
  def create(cls, statics, data_parallel: sharding.DataParallel) -> CompiledSteps:
    replicated = data_parallel.replicated

    def train_call(fn, batch_sharding):
      return jax.jit(functools.partial(fn, statics),
                     in_shardings=(replicated, replicated, batch_sharding, replicated, replicated),
                     out_shardings=(replicated, replicated), donate_argnums=(0, 1))

    return cls(
        one=train_call(train_step.train_step, data_parallel.batch),
        many=train_call(train_step.train_steps, data_parallel.stacked_batch),
        eval=jax.jit(functools.partial(train_step.eval_step, statics),
                     in_shardings=(replicated, data_parallel.batch, replicated),
                     out_shardings=replicated),
        # Made on device: a host value would be equality-checked across hosts at every log.
        zero_sums=jax.jit(train_step.zero_train_sums, out_shardings=replicated))
