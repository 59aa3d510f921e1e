"""The order training reads a dataset in: a seeded permutation per epoch.

Batch k of a run is a pure function of (seed, k), so a run resumed at step k
continues the exact order. Each process reads its own rows of every global
batch. No jax at import: ImageNet's decode workers (nin_jax/data/imagenet_input.py)
import it.
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch (the remainder is reshuffled into the next epoch)."""
  return num_examples // global_batch_size


def train_indices(num_examples: int, global_batch_size: int, seed: int,
                  step: int) -> np.ndarray:
  """Dataset indices of global batch `step`: a fresh permutation each epoch."""
  per_epoch = steps_per_epoch(num_examples, global_batch_size)
  epoch, k = divmod(step, per_epoch)
  order = epoch_order(num_examples, seed, epoch)
  return order[k * global_batch_size:(k + 1) * global_batch_size]


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The seeded permutation of the dataset that epoch `epoch` walks through."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return -(-num_examples // global_batch_size)


def process_rows(global_batch_size: int) -> slice:
  """This process's rows of a global batch."""
  import jax  # Here: the decode workers never import jax (seconds and memory each).
  per_process = global_batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)
