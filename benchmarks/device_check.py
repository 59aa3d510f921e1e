#!/usr/bin/env python
"""The one GPU check: run it once on a lent accelerator, paste what it prints.

    python benchmarks/device_check.py --idx_dir=/path/to/fashion-mnist   # ≤ 8 min on one GPU
    python benchmarks/device_check.py --smoke                          # tiny sizes, CPU, CI

Prints, on the default JAX device:
  1. NIN-CIFAR training img/s, TFLOP/s and MFU in bfloat16 and float32 at
     batch 128, 512 and 2048: the loop's own compiled call (train_steps, 8
     steps per dispatch, batches gathered from data on the device).
  2. The PyTorch peer (nin_jax/torch_nin.py: bf16 autocast, channels_last,
     torch.compile) at the same batches on the same GPU, and JAX bf16 / PyTorch.
  3. Wall time to 93% Fashion-MNIST test accuracy with the data on device
     (the real loop, train.train_and_evaluate), compile time shown separately.
A last line holds everything as JSON (also written to --output).

MFU is against the device's dense peak, looked up by device name in PEAKS.
For float32 the peak is the non-tensor-core FP32 rate; XLA's default
precision on NVIDIA GPUs lets float32 convolutions and dots run in TF32 on
tensor cores, so a float32 MFU above 100% means TF32 did the work.

Needs jax with CUDA (or TPU) support; the PyTorch part needs a CUDA build of
torch (skipped with a note otherwise); Fashion-MNIST as the four IDX files in
--idx_dir (Debian's dataset-fashion-mnist path by default; skipped with a note
if absent). Goals for these numbers are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import jax

from nin_jax import benchmark, config as config_lib, datasets, metrics, models, presets  # noqa: E402

# Dense peak TFLOP/s per device (bfloat16, float32 non-tensor), matched by
# substring of jax's device_kind. NVIDIA data sheets (SXM); TPUs per chip
# (/work/shared/reference/nin-facts.md); TPUs have no separate float32 rate.
PEAKS = {
    'H100': (989.0, 67.0),
    'H200': (989.0, 67.0),
    'A100': (312.0, 19.5),
    'TPU v4': (275.0, None),
    'TPU v5 lite': (197.0, None),
    'TPU v5p': (459.0, None),
}
TARGET_ACCURACY = 0.93
BATCHES, SMOKE_BATCHES = (128, 512, 2048), (8,)
STEPS_PER_DISPATCH = 8


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  for name, (bf16, fp32) in PEAKS.items():
    if name.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else fp32
  return None


def nin_cifar_throughput(smoke: bool) -> list[dict]:
  """Img/s, TFLOP/s and MFU of the compiled train call per dtype and batch."""
  rows = []
  kind = jax.devices()[0].device_kind
  flops = models.train_flops_per_example(presets.cifar10())
  for dtype in ('bfloat16', 'float32'):
    for batch in SMOKE_BATCHES if smoke else BATCHES:
      config = config_lib.base_config()
      config.model.dtype = dtype
      config.optim.batch_size = batch
      if smoke:
        config.model.width_multiplier = 0.125
      k = 2 if smoke else STEPS_PER_DISPATCH
      t0 = time.perf_counter()
      step_s = benchmark.compiled_step_time(config, k, calls=1 if smoke else 12)
      images_per_s = batch / step_s
      tflops = flops * images_per_s / 1e12
      peak = peak_tflops(kind, dtype)
      rows.append({'dtype': dtype, 'batch_size': batch, 'images_per_s': images_per_s,
                   'step_ms': 1e3 * step_s, 'tflops': tflops, 'peak_tflops': peak,
                   'mfu': tflops / peak if peak else None,
                   'wall_s_with_compile': time.perf_counter() - t0})
      print(_row(rows[-1]), flush=True)
  return rows


def _row(r: dict) -> str:
  mfu = f'{100 * r["mfu"]:.1f}%' if r['mfu'] is not None else 'n/a (peak unknown)'
  return (f'  NIN-CIFAR {r["dtype"]:>8} batch {r["batch_size"]:>4}: '
          f'{r["images_per_s"]:>10.0f} img/s, {r["step_ms"]:.3f} ms/step, '
          f'{r["tflops"]:.1f} TFLOP/s, MFU {mfu}')


def torch_peer(smoke: bool, jax_rows: list[dict]) -> list[dict]:
  """The PyTorch peer at the same batches; None rows say why it did not run."""
  try:
    import torch
    from nin_jax import torch_nin
  except ImportError as e:
    print(f'  PyTorch peer: skipped ({e})')
    return []
  cuda = torch.cuda.is_available()
  if not cuda and not smoke:
    print('  PyTorch peer: skipped (torch sees no CUDA device)')
    return []
  rows = []
  jax_bf16 = {r['batch_size']: r['images_per_s'] for r in jax_rows
              if r['dtype'] == 'bfloat16'}
  for batch in (SMOKE_BATCHES if smoke else BATCHES):
    # On CPU (smoke only): float32, not compiled; CPU bf16 is emulated and
    # torch.compile needs a C++ toolchain and minutes.
    peer = torch_nin.run_benchmark(
        preset='cifar10', batch_size=batch, steps=1 if smoke else 30,
        warmup=0 if smoke else 3, device='cuda' if cuda else 'cpu',
        dtype='bfloat16' if cuda else 'float32', channels_last=True, compile=cuda,
        threads=None)
    ratio = jax_bf16[batch] / peer['images_per_s'] if not smoke else None
    rows.append({'batch_size': batch, 'torch_images_per_s': peer['images_per_s'],
                 'device': peer['device'], 'compile': peer['compile'],
                 'jax_bf16_over_torch': ratio})
    print(f'  PyTorch {peer["torch_version"]} {peer["dtype"]} batch {batch:>4}: '
          f'{peer["images_per_s"]:>10.0f} img/s'
          + (f'; JAX / PyTorch {ratio:.2f}' if ratio else ' (smoke: full-width peer on CPU,'
             ' not comparable)'), flush=True)
  return rows


def fashion_mnist_time_to_target(smoke: bool, idx_dir: str, target: float) -> dict:
  """The real loop, data on device, until the end of its schedule; the first
  eval at or above `target` gives the time, with compile time shown apart."""
  from nin_jax.configs import fashion_mnist
  from nin_jax import train
  try:
    datasets.load_arrays('fashion_mnist', 'test', source='idx', idx_dir=idx_dir or None)
  except Exception as e:  # noqa: BLE001 — any reason the files cannot be read
    print(f'  Fashion-MNIST: skipped ({type(e).__name__}: {str(e)[:200]}); pass --idx_dir')
    return {'skipped': str(e)[:200]}
  config = fashion_mnist.get_config()
  config.dataset.idx_dir = idx_dir
  config.dataset.on_device = True
  # Batch norm, He init, cosine lr, flips and 2-pixel shifts; ten epochs
  # (the one-epoch quickstart reaches 90.7%).
  config.augment.flip, config.augment.translate = True, 2
  config.num_epochs = 10.0
  config.optim.batch_size = 256
  config.optim.learning_rate = 0.2
  config.eval_every_epochs = 0.5
  config.log_every_steps = 10 ** 6
  config.checkpoint_every_steps = 10 ** 6
  config.write_plots = False
  config.model.dtype = 'bfloat16'
  if smoke:
    config.dataset.train_subset, config.dataset.test_subset = 512, 128
    config.model.width_multiplier = 0.125
    config.num_epochs = 1.0
    config.optim.batch_size = 64
  compiles = []  # (end time, seconds) of every XLA compilation

  def on_duration(event, seconds, **kwargs):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append((time.time(), seconds))
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.time()
      final = train.train_and_evaluate(config, workdir)
      evals = [r for r in metrics.read_metrics(workdir) if 'test/accuracy' in r]
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
  hit = next((r for r in evals if r['test/accuracy'] >= target), None)
  result = {'target': target, 'final_accuracy': final['test/accuracy'],
            'epochs': config.num_epochs, 'total_wall_s': time.time() - t0,
            'compile_s_total': sum(s for _, s in compiles)}
  if hit is None:
    print(f'  Fashion-MNIST: {target:.0%} not reached in {config.num_epochs:g} epochs '
          f'(final {final["test/accuracy"]:.4f})')
    return result
  compile_s = sum(s for end, s in compiles if end <= hit['time'])
  wall = hit['time'] - t0
  result.update({'reached_at_epoch': hit['epoch'], 'wall_s': wall,
                 'compile_s': compile_s, 'wall_s_after_compile': wall - compile_s})
  print(f'  Fashion-MNIST: {target:.0%} test accuracy at epoch {hit["epoch"]:.1f} '
        f'({hit["test/accuracy"]:.4f}): {wall:.1f} s wall, of which {compile_s:.1f} s '
        f'compiling -> {wall - compile_s:.1f} s after compile '
        f'(data loading and evals included)', flush=True)
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes, any backend (CI on CPU): checks it runs')
  parser.add_argument('--idx_dir', default='',
                      help='Fashion-MNIST IDX files (default: Debian\'s path)')
  parser.add_argument('--output', default='', help='also write the JSON here')
  args = parser.parse_args(argv)
  t0 = time.time()
  device = jax.devices()[0]
  print(f'device check: {jax.device_count()} × {device.device_kind} ({jax.default_backend()}),'
        f' jax {jax.__version__}{" [smoke]" if args.smoke else ""}', flush=True)
  result = {'device_kind': device.device_kind, 'backend': jax.default_backend(),
            'jax_version': jax.__version__, 'smoke': args.smoke}
  result['nin_cifar'] = nin_cifar_throughput(args.smoke)
  result['torch_peer'] = torch_peer(args.smoke, result['nin_cifar'])
  result['fashion_mnist'] = fashion_mnist_time_to_target(
      args.smoke, args.idx_dir, 0.5 if args.smoke else TARGET_ACCURACY)
  result['total_s'] = time.time() - t0
  print(f'device check done in {result["total_s"]:.0f} s')
  print(json.dumps(result))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main()
