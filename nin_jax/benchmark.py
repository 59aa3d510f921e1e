"""Throughput of a config's train step and input pipeline, and MFU.

Measures the very step `train.py` runs (same state, same jit, same shardings)
on synthetic batches of the config's shape, so no dataset is needed:
compile time, median step time, images/s, achieved TFLOP/s (from the model's
own FLOP count, stated per image) and MFU against a peak given by the user.
The input pipeline's images/s is measured separately on arrays of the same
shape. With `compare_torch`, the PyTorch peer (benchmarks/torch_nin.py) runs
the same network in the same process right after, so the ratio of the two is
measured under the same machine load.
"""

from __future__ import annotations

import functools
import os
import statistics
import time

import jax
import ml_collections
import numpy as np

from nin_jax import input_pipeline, models, presets, profiling, sharding
from nin_jax import steps as train_steps  # `steps` is a step count here


def _input_shape_and_classes(config) -> tuple[tuple[int, int, int], int]:
  spec = presets.get_preset(config.model.preset)
  return spec.input_shape, spec.num_classes


def train_step_throughput(config: ml_collections.ConfigDict, *, steps: int = 10,
                          warmup: int = 2, profile_steps: tuple[int, int] | None = None,
                          profile_dir: str = '') -> dict:
  """Times `steps` train steps of config's model at config.optim.batch_size.

  profile_steps (A, B): steps A..B-1 after compilation (warmup steps first) are
  traced into profile_dir; traced steps run slower, so keep them in the warmup
  or read the trace, not the timing.
  """
  dp = sharding.DataParallel.create()
  batch = config.optim.batch_size
  dp.check_batch_size(batch)
  input_shape, num_classes = _input_shape_and_classes(config)
  state, task = train_steps.create_train_state(config, num_classes, input_shape,
                                         steps_per_epoch=1000, total_steps=100_000)
  state = dp.replicate(state)
  sums = dp.replicate(train_steps.zero_train_sums())
  rep, bat = dp.replicated, dp.batch
  step_fn = jax.jit(functools.partial(train_steps.train_step, task),
                    in_shardings=(rep, rep, bat), out_shardings=(rep, rep),
                    donate_argnums=(0, 1))
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()
  host_batch = {'image': rng.standard_normal((local, *input_shape), np.float32),
                'label': rng.integers(0, num_classes, local).astype(np.int32)}
  device_batch = dp.to_global(host_batch)

  t0 = time.perf_counter()
  compiled = step_fn.lower(state, sums, device_batch).compile()
  compile_s = time.perf_counter() - t0
  profiler = profiling.StepProfiler(profile_dir, profile_steps)
  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    with profiler.step(i):
      state, sums = compiled(state, sums, device_batch)
      jax.block_until_ready(state)
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  profiler.close()
  step_s = statistics.median(times)
  flops_per_image = models.train_flops_per_example(
      presets.get_preset(config.model.preset), input_shape, head=config.model.head,
      fc_hidden=tuple(config.model.fc_hidden))
  images_per_s = batch / step_s
  return {
      'framework': 'jax', 'jax_version': jax.__version__,
      'backend': jax.default_backend(), 'devices': dp.num_devices,
      'device_kind': jax.devices()[0].device_kind,
      'preset': config.model.preset, 'batch_size': batch,
      'dtype': config.model.dtype,
      'conv_impl': models.resolve_conv_impl(config.model.conv_impl),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'compile_s': compile_s, 'step_time_s_median': step_s,
      'images_per_s': images_per_s,
      'train_gflop_per_image': flops_per_image / 1e9,
      'achieved_tflops': flops_per_image * images_per_s / 1e12,
  }


def input_pipeline_throughput(config: ml_collections.ConfigDict, *,
                              batches: int = 50, num_examples: int = 10_000) -> float:
  """Images/s of the host pipeline (index gather + global array) on random data."""
  input_shape, num_classes = _input_shape_and_classes(config)
  rng = np.random.default_rng(0)
  data = input_pipeline.InMemoryData(
      rng.standard_normal((num_examples, *input_shape), np.float32),
      rng.integers(0, num_classes, num_examples).astype(np.int32),
      np.zeros((1, *input_shape), np.float32), np.zeros((1,), np.int32), num_classes)
  dp = sharding.DataParallel.create()
  it = input_pipeline.train_batches(data, config.optim.batch_size, seed=0)
  t0 = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(dp.to_global(next(it)))
  return batches * config.optim.batch_size / (time.perf_counter() - t0)


def compare(config: ml_collections.ConfigDict, *, steps: int = 10, warmup: int = 2,
            peak_tflops: float = 0.0, compare_torch: bool = False,
            torch_threads: int = 0, torch_device: str = 'cpu',
            torch_compile: bool = False, profile_steps: tuple[int, int] | None = None,
            profile_dir: str = '') -> dict:
  """The harness: JAX step, input pipeline, MFU and (optionally) the PyTorch peer."""
  m = config.model
  if compare_torch and (m.width_multiplier != 1.0 or m.head != 'gap' or m.batch_norm
                        or m.preset not in ('cifar10', 'cifar10_caffe', 'imagenet')):
    raise ValueError('the PyTorch peer is the paper network (cifar10 or imagenet preset, '
                     'GAP head, no batch norm, width 1): compare only that')
  result = train_step_throughput(config, steps=steps, warmup=warmup,
                                 profile_steps=profile_steps, profile_dir=profile_dir)
  result['input_images_per_s'] = input_pipeline_throughput(config)
  if peak_tflops:
    result['peak_tflops'] = peak_tflops
    result['mfu'] = result['achieved_tflops'] / peak_tflops
  if compare_torch:
    from benchmarks import torch_nin  # A benchmark-only dependency.
    dtype = config.model.dtype
    peer = torch_nin.run_benchmark(
        preset='imagenet' if m.preset == 'imagenet' else 'cifar10',
        batch_size=config.optim.batch_size, steps=steps, warmup=warmup,
        device=torch_device, dtype=dtype, channels_last=torch_device == 'cuda',
        compile=torch_compile, threads=torch_threads or None)
    result['torch_images_per_s'] = peer['images_per_s']
    result['torch_version'] = peer['torch_version']
    result['jax_over_torch'] = result['images_per_s'] / peer['images_per_s']
  return result


def format_report(result: dict) -> str:
  return '\n'.join(f'{k:>24}: {v:.4g}' if isinstance(v, float) else f'{k:>24}: {v}'
                   for k, v in result.items())
