"""Throughput of a config's train step and input pipeline, and MFU.

Measures the very step `train.py` runs (same state, same jit, same shardings)
on synthetic batches of the config's shape, so no dataset is needed:
compile time, median step time, images/s, achieved TFLOP/s (from the model's
own FLOP count, stated per image) and MFU against a peak given by the user.
The input pipeline's images/s is measured separately on arrays of the same
shape. With `compare_torch`, the PyTorch peer (nin_jax/research/torch_nin.py) runs
the same network in the same process right after, so the ratio of the two is
measured under the same machine load.

`host_overhead` runs the real train loop on a network so small that its
compute hardly counts and compares its time per step with the compiled step
alone, for several steps per dispatch: what the loop's host work costs.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time

import jax
import ml_collections
import numpy as np

from nin_jax.data import input_pipeline
from nin_jax.runtime import metrics
from nin_jax.model import nin
from nin_jax.model import architectures
from nin_jax.runtime import profiling
from nin_jax.runtime import sharding
from nin_jax.train import train_step
from nin_jax.train.compiled_steps import CompiledSteps


def _input_shape_and_classes(config) -> tuple[tuple[int, int, int], int]:
  spec = architectures.get_preset(config.model.preset)
  return spec.input_shape, spec.num_classes


def train_step_throughput(config: ml_collections.ConfigDict, *, steps: int = 10,
                          warmup: int = 2, profile_steps: tuple[int, int] | None = None,
                          profile_dir: str = '') -> dict:
  """Times `steps` train steps of config's model at config.optim.batch_size.

  profile_steps (A, B): steps A..B-1 after compilation (warmup steps first) are
  traced into profile_dir; traced steps run slower, so keep them in the warmup
  or read the trace, not the timing.
  """
  data_parallel = sharding.DataParallel.create()
  batch = config.optim.batch_size
  data_parallel.check_batch_size(batch)
  input_shape, num_classes = _input_shape_and_classes(config)
  state, statics = train_step.create_train_state(config, num_classes, input_shape,
                                         steps_per_epoch=1000, total_steps=100_000)
  state = data_parallel.replicate(state)
  sums = data_parallel.replicate(train_step.zero_train_sums())
  # The loop's call: the run's Hyperparams as arguments (compiled_steps.py).
  step_fn = CompiledSteps.create(statics, data_parallel).one
  hparams = data_parallel.replicate(statics.hyperparams)
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()
  host_batch = {'image': rng.standard_normal((local, *input_shape), np.float32),
                'label': rng.integers(0, num_classes, local).astype(np.int32)}
  device_batch = data_parallel.to_global(host_batch)

  t0 = time.perf_counter()
  executable = step_fn.lower(state, sums, device_batch, None, hparams).compile()

  def compiled(state, sums, batch):
    return executable(state, sums, batch, None, hparams)
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
  flops_per_image = nin.train_flops_per_example(
      architectures.get_preset(config.model.preset), input_shape, head=config.model.head,
      fc_hidden=tuple(config.model.fc_hidden))
  images_per_s = batch / step_s
  return {
      'framework': 'jax', 'jax_version': jax.__version__,
      'backend': jax.default_backend(), 'devices': data_parallel.num_devices,
      'device_kind': jax.devices()[0].device_kind,
      'preset': config.model.preset, 'batch_size': batch,
      'dtype': config.model.dtype,
      'conv_impl': nin.resolve_conv_impl(config.model.conv_impl),
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
  data_parallel = sharding.DataParallel.create()
  it = input_pipeline.train_batches(data, config.optim.batch_size, seed=0)
  t0 = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(data_parallel.to_global(next(it)))
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
    from nin_jax.research import torch_nin  # Imports torch: only with compare_torch.
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


def host_overhead(config: ml_collections.ConfigDict, *, ks=(1, 8, 32),
                  intervals: int = 2, steps_per_interval: int = 32) -> list[dict]:
  """Per k: the real loop's time per step against the compiled step alone.

  The loop (train.train_and_evaluate, data on device, k steps per dispatch)
  logs every `steps_per_interval` steps; its time per step is taken from the
  logged intervals after the first (which holds the compilation), so it
  includes everything the loop does between steps: batching, dispatch and the
  metric fetch at each log. The compiled step alone is the same jit called
  back to back on batches already on the device, waited for once.
  """
  from nin_jax.train import loop as train  # Only this mode needs the loop (and Orbax) loaded.
  results = []
  for k in ks:
    if steps_per_interval % k:
      raise ValueError(f'steps_per_interval={steps_per_interval} is not a multiple of k={k}')
    cfg = copy.deepcopy(config)
    cfg.steps_per_dispatch = k
    cfg.dataset.on_device = True
    cfg.log_every_steps = steps_per_interval
    cfg.checkpoint_every_steps = 10 ** 9   # only the final save, after the last interval
    cfg.eval_every_epochs = 10 ** 6        # only the final eval
    cfg.num_epochs = 10.0 ** 6
    cfg.max_steps = steps_per_interval * (intervals + 1)
    cfg.write_plots = False
    with tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(cfg, workdir)
      rates = [r['train/images_per_s'] for r in metrics.read_metrics(workdir)
               if 'train/images_per_s' in r][1:]
    loop_s = cfg.optim.batch_size / statistics.median(rates)
    step_s = compiled_step_time(cfg, k, calls=max(1, steps_per_interval * intervals // k))
    results.append({'steps_per_dispatch': k, 'loop_step_s': loop_s,
                    'compiled_step_s': step_s, 'overhead': loop_s / step_s - 1})
  return results


def compiled_step_time(config, k: int, *, calls: int) -> float:
  """Seconds per step of the loop's compiled call (k steps, data on device)."""
  data_parallel = sharding.DataParallel.create()
  input_shape, num_classes = _input_shape_and_classes(config)
  batch, n = config.optim.batch_size, 4 * config.optim.batch_size
  state, statics = train_step.create_train_state(config, num_classes, input_shape,
                                               steps_per_epoch=1000, total_steps=100_000)
  rng = np.random.default_rng(0)
  data = data_parallel.replicate({'image': rng.standard_normal((n, *input_shape), np.float32),
                       'label': rng.integers(0, num_classes, n).astype(np.int32)})
  index = rng.integers(0, n, (k, batch)).astype(np.int32)
  steps = CompiledSteps.create(statics, data_parallel)  # The loop's calls.
  if k == 1:
    call, batches = steps.one, data_parallel.to_global({'index': index[0]})
  else:
    call, batches = steps.many, data_parallel.to_global({'index': index}, stacked=True)
  hparams = data_parallel.replicate(statics.hyperparams)
  state = data_parallel.replicate(state)
  sums = data_parallel.replicate(train_step.zero_train_sums())
  state, sums = call(state, sums, batches, data, hparams)  # compile and warm up
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(calls):
    state, sums = call(state, sums, batches, data, hparams)
  jax.block_until_ready(state)
  return (time.perf_counter() - t0) / (calls * k)


def format_overhead(rows: list[dict]) -> str:
  lines = ['steps/dispatch | loop ms/step | compiled ms/step | loop overhead']
  lines += [f'{r["steps_per_dispatch"]:>14} | {1e3 * r["loop_step_s"]:>12.3f} | '
            f'{1e3 * r["compiled_step_s"]:>16.3f} | {100 * r["overhead"]:>+12.1f} %'
            for r in rows]
  return '\n'.join(lines)


def format_report(result: dict) -> str:
  return '\n'.join(f'{k:>24}: {v:.4g}' if isinstance(v, float) else f'{k:>24}: {v}'
                   for k, v in result.items())
