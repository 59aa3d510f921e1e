#!/usr/bin/env python
"""The one GPU check: run it once on a lent accelerator, keep what it writes.

    benchmarks/device_run.sh OUTDIR            # on the lent GPU: ≤ 8 min, see below
    benchmarks/device_run.sh OUTDIR --smoke    # tiny sizes, any backend (CI's rehearsal)
    python benchmarks/device_check.py --smoke  # every section in this process (CPU test)

Sections, each with a time budget (SECTION_BUDGET_S; device_run.sh runs each
as its own process under `timeout`, so a slow one cannot eat the next one's
time, and the budgets add up to 8 minutes on one H200):
  env            Python, jax, flax, optax, orbax and torch versions, the devices,
                 that nin_jax imports from this checkout and TensorFlow is absent.
  nin_cifar      NIN-CIFAR training img/s, TFLOP/s and MFU in bfloat16 and
                 float32 at batch 512, 2048 and 128: the loop's own compiled
                 call (train_steps, 8 steps per dispatch, batches gathered from
                 data on the device).
  torch_peer     The PyTorch peer (nin_jax/research/torch_nin.py: bf16 autocast,
                 channels_last, torch.compile) at the same batches on the same
                 GPU, and JAX bf16 / PyTorch (read from nin_cifar.json).
  fashion_mnist  Wall time to 93% Fashion-MNIST test accuracy with the data on
                 device (the real loop, train.train_and_evaluate), compile time
                 shown separately.
With --output_dir, each section's JSON is written to OUTDIR/<section>.json as
it goes: after every row, and once more, `"complete": true`, when it ends. A
section cut off by its budget keeps the rows it finished.

MFU is against the device's dense peak, looked up by device name in PEAKS.
For float32 the peak is the non-tensor-core FP32 rate; XLA's default
precision on NVIDIA GPUs lets float32 convolutions and dots run in TF32 on
tensor cores, so a float32 MFU above 100% means TF32 did the work.

Needs jax with CUDA (or TPU) support; the PyTorch part needs a CUDA build of
torch (skipped with a note otherwise); Fashion-MNIST as the four IDX files in
--idx_dir (skipped with a note if absent). Goals are in docs/benchmarks.md.
jax, nin_jax and torch are imported inside the sections, so `--budgets`
answers with the standard library alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

# Seconds per section on one H200, compilation included. 'install' is
# device_run.sh's own step (the carried wheels); the total is at most 8 min.
SECTION_BUDGET_S = {'install': 30, 'env': 30, 'nin_cifar': 150, 'torch_peer': 120,
                    'fashion_mnist': 150}
SECTIONS = ('env', 'nin_cifar', 'torch_peer', 'fashion_mnist')
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
# The goal rows first: a section cut off by its budget keeps the most wanted.
BATCHES, SMOKE_BATCHES = (512, 2048, 128), (8,)
STEPS_PER_DISPATCH = 8


class SectionOutput:
  """One section's JSON, rewritten to OUTDIR/<name>.json as rows arrive."""

  def __init__(self, name: str, output_dir: str, smoke: bool):
    self.path = os.path.join(output_dir, f'{name}.json') if output_dir else ''
    self.t0 = time.time()
    self.record = {'section': name, 'budget_s': SECTION_BUDGET_S[name], 'smoke': smoke,
                   'complete': False, 'rows': []}
    self._write()

  def add_row(self, row: dict) -> None:
    self.record['rows'].append(row)
    self._write()

  def finish(self, **fields) -> dict:
    self.record.update(fields, complete=True,
                       tensorflow_imported='tensorflow' in sys.modules)
    self._write()
    return self.record

  def _write(self) -> None:
    self.record['elapsed_s'] = time.time() - self.t0
    if self.path:  # Whole or not at all: write aside, then rename.
      with open(self.path + '.tmp', 'w') as f:
        json.dump(self.record, f, indent=2)
      os.replace(self.path + '.tmp', self.path)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  for name, (bf16, fp32) in PEAKS.items():
    if name.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else fp32
  return None


def nin_cifar_throughput(out: SectionOutput, smoke: bool) -> dict:
  """Img/s, TFLOP/s and MFU of the compiled train call per dtype and batch."""
  import jax
  from nin_jax.research import throughput
  from nin_jax.train import config as config_lib
  from nin_jax.model import nin
  from nin_jax.model import architectures
  kind = jax.devices()[0].device_kind
  flops = nin.train_flops_per_example(architectures.cifar10())
  for dtype in ('bfloat16', 'float32'):
    for batch in SMOKE_BATCHES if smoke else BATCHES:
      config = config_lib.base_config()
      config.model.dtype = dtype
      config.optim.batch_size = batch
      if smoke:
        config.model.width_multiplier = 0.125
      k = 2 if smoke else STEPS_PER_DISPATCH
      t0 = time.perf_counter()
      step_s = throughput.compiled_step_time(config, k, calls=1 if smoke else 12)
      images_per_s = batch / step_s
      tflops = flops * images_per_s / 1e12
      peak = peak_tflops(kind, dtype)
      out.add_row({'dtype': dtype, 'batch_size': batch, 'images_per_s': images_per_s,
                   'step_ms': 1e3 * step_s, 'tflops': tflops, 'peak_tflops': peak,
                   'mfu': tflops / peak if peak else None,
                   'wall_s_with_compile': time.perf_counter() - t0})
      print(_row(out.record['rows'][-1]), flush=True)
  return out.finish(device_kind=kind)


def _row(r: dict) -> str:
  mfu = f'{100 * r["mfu"]:.1f}%' if r['mfu'] is not None else 'n/a (peak unknown)'
  return (f'  NIN-CIFAR {r["dtype"]:>8} batch {r["batch_size"]:>4}: '
          f'{r["images_per_s"]:>10.0f} img/s, {r["step_ms"]:.3f} ms/step, '
          f'{r["tflops"]:.1f} TFLOP/s, MFU {mfu}')


def torch_peer(out: SectionOutput, smoke: bool, jax_rows: list[dict]) -> dict:
  """The PyTorch peer at the same batches; `skipped` says why it did not run."""
  try:
    import torch
    from nin_jax.research import torch_nin
  except ImportError as e:
    print(f'  PyTorch peer: skipped ({e})', flush=True)
    return out.finish(skipped=f'torch is not importable here: {e}')
  cuda = torch.cuda.is_available()
  if not cuda and not smoke:
    print('  PyTorch peer: skipped (torch sees no CUDA device)', flush=True)
    return out.finish(skipped='torch sees no CUDA device', torch_version=torch.__version__)
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
    ratio = (jax_bf16[batch] / peer['images_per_s']
             if not smoke and batch in jax_bf16 else None)
    out.add_row({'batch_size': batch, 'torch_images_per_s': peer['images_per_s'],
                 'device': peer['device'], 'compile': peer['compile'],
                 'jax_bf16_over_torch': ratio})
    print(f'  PyTorch {peer["torch_version"]} {peer["dtype"]} batch {batch:>4}: '
          f'{peer["images_per_s"]:>10.0f} img/s'
          + (f'; JAX / PyTorch {ratio:.2f}' if ratio else ' (smoke: full-width peer on CPU,'
             ' not comparable)' if smoke else ' (no JAX row to compare)'), flush=True)
  return out.finish(torch_version=torch.__version__)


def fashion_mnist_time_to_target(out: SectionOutput, smoke: bool, idx_dir: str,
                                 target: float) -> dict:
  """The real loop, data on device, until the end of its schedule; the first
  eval at or above `target` gives the time, with compile time shown apart."""
  import jax
  from nin_jax.data import datasets
  from nin_jax.runtime import metrics
  from nin_jax.train import loop as train
  from nin_jax.configs import fashion_mnist
  try:
    datasets.load_arrays('fashion_mnist', 'test', source='idx', idx_dir=idx_dir or None)
  except Exception as e:  # noqa: BLE001 — any reason the files cannot be read
    print(f'  Fashion-MNIST: skipped ({type(e).__name__}: {str(e)[:200]}); pass --idx_dir')
    return out.finish(skipped=str(e)[:200])
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
  for r in evals:
    out.record['rows'].append({'epoch': r['epoch'], 'test/accuracy': r['test/accuracy'],
                               'wall_s': r['time'] - t0})
  result = {'target': target, 'final_accuracy': final['test/accuracy'],
            'epochs': config.num_epochs, 'total_wall_s': time.time() - t0,
            'compile_s_total': sum(s for _, s in compiles)}
  if hit is None:
    print(f'  Fashion-MNIST: {target:.0%} not reached in {config.num_epochs:g} epochs '
          f'(final {final["test/accuracy"]:.4f})')
    return out.finish(**result)
  compile_s = sum(s for end, s in compiles if end <= hit['time'])
  wall = hit['time'] - t0
  result.update({'reached_at_epoch': hit['epoch'], 'wall_s': wall,
                 'compile_s': compile_s, 'wall_s_after_compile': wall - compile_s})
  print(f'  Fashion-MNIST: {target:.0%} test accuracy at epoch {hit["epoch"]:.1f} '
        f'({hit["test/accuracy"]:.4f}): {wall:.1f} s wall, of which {compile_s:.1f} s '
        f'compiling -> {wall - compile_s:.1f} s after compile '
        f'(data loading and evals included)', flush=True)
  return out.finish(**result)


def environment(out: SectionOutput) -> dict:
  """What the check runs on, and that it runs on this checkout without TensorFlow."""
  import importlib.metadata
  import jax
  import nin_jax
  from nin_jax.research import throughput  # noqa: F401 — what the sections use
  from nin_jax.data import datasets  # noqa: F401 — what the sections use
  from nin_jax.runtime import metrics  # noqa: F401 — what the sections use
  from nin_jax.train import loop as train  # noqa: F401 — what the sections use
  versions = {}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorboard', 'numpy',
               'ml_collections', 'etils', 'torch'):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  device = jax.devices()[0]
  print(f'device check: {jax.device_count()} × {device.device_kind} ({jax.default_backend()}),'
        f' jax {jax.__version__}, Python {platform.python_version()}', flush=True)
  return out.finish(
      python=platform.python_version(), versions=versions, backend=jax.default_backend(),
      device_kind=device.device_kind, device_count=jax.device_count(),
      nin_jax_from=os.path.dirname(os.path.abspath(nin_jax.__file__)))


def run_section(name: str, args) -> dict:
  out = SectionOutput(name, args.output_dir, args.smoke)
  if name == 'env':
    return environment(out)
  if name == 'nin_cifar':
    return nin_cifar_throughput(out, args.smoke)
  if name == 'torch_peer':
    return torch_peer(out, args.smoke, _earlier_rows(args, 'nin_cifar'))
  return fashion_mnist_time_to_target(out, args.smoke, args.idx_dir,
                                      0.5 if args.smoke else TARGET_ACCURACY)


_DONE: dict[str, dict] = {}  # Sections run in this process.


def _earlier_rows(args, name: str) -> list[dict]:
  """Rows of a section run before: in this process, or in OUTDIR/<name>.json."""
  if name in _DONE:
    return _DONE[name]['rows']
  path = os.path.join(args.output_dir, f'{name}.json')
  if args.output_dir and os.path.exists(path):
    with open(path) as f:
      return json.load(f)['rows']
  return []


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes, any backend (CI on CPU): checks it runs')
  parser.add_argument('--section', action='append', choices=SECTIONS,
                      help='run only this section (repeatable; default: all, in order)')
  parser.add_argument('--idx_dir', default='',
                      help="Fashion-MNIST IDX files (default: Debian's path)")
  parser.add_argument('--output_dir', default='',
                      help='write each section to OUTPUT_DIR/<section>.json as it goes')
  parser.add_argument('--output', default='', help='also write all sections here, at the end')
  parser.add_argument('--budgets', action='store_true',
                      help='print "<section> <seconds>" per budget and exit')
  args = parser.parse_args(argv)
  if args.budgets:
    print('\n'.join(f'{k} {v}' for k, v in SECTION_BUDGET_S.items()))
    return {}
  from nin_jax.runtime import process_setup
  process_setup.configure()  # What every entry point does before jax starts.
  if args.output_dir:
    os.makedirs(args.output_dir, exist_ok=True)
  t0 = time.time()
  for name in args.section or SECTIONS:
    _DONE[name] = run_section(name, args)
  result = {**_DONE, 'total_s': time.time() - t0}
  print(f'device check: {", ".join(_DONE)} done in {result["total_s"]:.0f} s', flush=True)
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main()
