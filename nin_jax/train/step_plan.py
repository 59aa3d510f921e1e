"""A run's step arithmetic: steps per epoch, the schedule's length, where a launch stops."""

from __future__ import annotations

import dataclasses

from nin_jax.data import input_pipeline


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """Where a run's steps fall.

  The schedule spans num_epochs; max_steps only stops the run early, so a
  max_steps run is a prefix of the full one (and resumes into it).
  """
  steps_per_epoch: int
  total_steps: int   # The schedule's length.
  end_step: int      # Where this launch stops.
  eval_every: int

  @classmethod
  def create(cls, config, num_train: int) -> StepPlan:
    if config.optim.batch_size > num_train:
      raise ValueError(f'config.optim.batch_size={config.optim.batch_size} is larger '
                       f'than the {num_train} training images')
    per_epoch = input_pipeline.steps_per_epoch(num_train, config.optim.batch_size)
    total = int(round(config.num_epochs * per_epoch))
    return cls(steps_per_epoch=per_epoch, total_steps=total,
               end_step=min(total, config.max_steps) if config.max_steps else total,
               eval_every=max(1, int(round(config.eval_every_epochs * per_epoch))))
