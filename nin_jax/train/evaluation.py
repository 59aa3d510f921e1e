"""Evaluation: a model's loss and accuracy over the test split, and the validation split."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from nin_jax.runtime import sharding


def evaluate(eval_step: Callable, state, data, data_parallel: sharding.DataParallel,
             batch_size: int) -> dict[str, float]:
  """Test metrics, and validation metrics beside them when images were held out.

  `eval_step(state, batch)` is the compiled eval step (CompiledSteps.eval); its
  batches are padded and masked, so every image counts exactly once.
  """
  result = _evaluate_split(eval_step, state, data.eval_batches(batch_size), data_parallel,
                           'test', data.num_classes)
  if getattr(data, 'num_validation', 0):
    result.update(_evaluate_split(eval_step, state, data.validation_batches(batch_size),
                                  data_parallel, 'val', data.num_classes))
  return result


def _evaluate_split(eval_step, state, batches, data_parallel, prefix: str,
                    num_classes: int) -> dict[str, float]:
  totals = None
  for batch in batches:
    out = eval_step(state, data_parallel.to_global(batch))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  n = totals['count']
  result = {f'{prefix}/loss': totals['loss'] / n, f'{prefix}/accuracy': totals['correct'] / n,
            f'{prefix}/examples': n}
  if num_classes > 10:
    result[f'{prefix}/accuracy_top5'] = totals['correct_top5'] / n
  return result
