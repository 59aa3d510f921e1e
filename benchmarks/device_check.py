#!/usr/bin/env python
"""The one GPU check: run it once on a lent accelerator, keep what it writes.

    benchmarks/device_run.sh OUTDIR            # on the lent GPU: ≤ 9.5 min, see below
    benchmarks/device_run.sh OUTDIR --smoke    # tiny sizes, any backend (CI's rehearsal)
    python benchmarks/device_check.py --smoke  # every section in this process (CPU test)

Sections, each with a time budget (SECTION_BUDGET_S; device_run.sh runs each
as its own process under `timeout`, so a slow one cannot eat the next one's
time, and the budgets add up to 9.5 minutes on one H200):
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
  trial_groups   K = 16 NIN-CIFAR trials (16 learning rates and seeds, batch
                 128, bfloat16, synthetic CIFAR-shaped data) trained as one
                 group (research.trial_group, placement auto: vmap-ed on the
                 GPU) against the same 16 one after another (per-trial calls
                 of one compiled step): ms per trial-step, trials/hour, ratio.
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
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time

# Seconds per section on one H200, compilation included. 'install' is
# device_run.sh's own step (the carried wheels: one 77 KB wheel); the total is
# at most 9.5 min, so one device call of 10 min holds it.
SECTION_BUDGET_S = {'install': 20, 'env': 30, 'nin_cifar': 150, 'torch_peer': 120,
                    'fashion_mnist': 150, 'trial_groups': 100}
SECTIONS = ('env', 'nin_cifar', 'torch_peer', 'fashion_mnist', 'trial_groups')
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
# trial_groups: (trials, steps per trial). 16 × 512 steps one after another is
# about 16 × 512 × 1.5 ms = 12 s of steps on an H200 (a guess: not yet run);
# each side adds a compile and 16 trials' final eval, checkpoint and export.
TRIAL_GROUP, SMOKE_TRIAL_GROUP = (16, 512), (2, 4)


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


def trial_groups(out: SectionOutput, smoke: bool) -> dict:
  """K trials of one program as one group against the same K one after another.

  'sequential' is the group's per-trial calls (stepping='calls'): one compiled
  step, each trial's chunk a call of it, as its own run would make; that is
  a sequential sweep's work less its K - 1 extra compiles. 'group' is the
  placement a GPU takes (auto: the trials vmap-ed in one step); in --smoke on
  CPU, where auto would also call per trial, it is forced to vmap.
  """
  import jax
  from nin_jax.research import trial_group
  k, steps = SMOKE_TRIAL_GROUP if smoke else TRIAL_GROUP
  configs = _trial_group_configs(k, steps, smoke)
  group = 'vmap' if smoke and jax.default_backend() == 'cpu' else 'auto'
  with _synthetic_cifar(64 if smoke else 8192, 16 if smoke else 512), \
       tempfile.TemporaryDirectory() as root:
    for mode, stepping in (('sequential', 'calls'), ('group', group)):
      out.add_row({'mode': mode, **_timed_group(trial_group, configs, stepping,
                                                os.path.join(root, mode))})
      print(_trial_group_row(out.record['rows'][-1]), flush=True)
  sequential, grouped = out.record['rows']
  ratios = {'trial_steps_ratio': sequential['trial_step_ms'] / grouped['trial_step_ms'],
            'trials_per_hour_ratio': grouped['trials_per_hour'] / sequential['trials_per_hour']}
  print(f'  trial group / sequential: {ratios["trial_steps_ratio"]:.2f}× trial-steps/s, '
        f'{ratios["trials_per_hour_ratio"]:.2f}× trials/hour (goal ≥ 5×)', flush=True)
  return out.finish(trials=k, steps_per_trial=steps, batch_size=configs[0].optim.batch_size,
                    **ratios)


def _trial_group_configs(k: int, steps: int, smoke: bool) -> list:
  """NIN-CIFAR at batch 128, bfloat16: K learning rates (0.01..0.1) and seeds."""
  from nin_jax.train import config as config_lib
  configs = []
  for i in range(k):
    config = config_lib.base_config()
    config.model.dtype = 'bfloat16'
    config.optim.learning_rate = round(0.01 * 10 ** (i / max(k - 1, 1)), 5)
    config.seed = i
    config.max_steps = steps
    config.log_every_steps = max(steps // 4, 1)  # The first interval holds the compile.
    config.eval_every_epochs = 10.0 ** 6         # One eval, at the end.
    config.checkpoint_every_steps = 10 ** 6      # One checkpoint, at the end.
    config.write_plots = False
    if smoke:
      config.model.width_multiplier = 0.125
      config.optim.batch_size = 8
    configs.append(config)
  return configs


@contextlib.contextmanager
def _synthetic_cifar(num_train: int, num_test: int):
  """The loop's data: random CIFAR-shaped images (the image has no TFDS to read CIFAR)."""
  from unittest import mock
  import numpy as np
  from nin_jax.data import input_pipeline
  rng = np.random.default_rng(0)

  def split(n):
    return (rng.standard_normal((n, 32, 32, 3), np.float32),
            rng.integers(0, 10, n).astype(np.int32))
  data = input_pipeline.InMemoryData(*split(num_train), *split(num_test), num_classes=10)
  with mock.patch.object(input_pipeline, 'create', lambda dataset: data):
    yield


def _timed_group(trial_group, configs: list, stepping: str, root: str) -> dict:
  """Wall time of train_group (its trials' lines kept off the console) and its steady rate.

  The steady rate is each trial's logged img/s after its first interval (which
  holds the compile); a trial's interval also holds the other trials' steps,
  so one trial-step takes batch / (K × img/s).
  """
  import statistics
  from nin_jax.runtime import metrics
  k, batch = len(configs), configs[0].optim.batch_size
  workdirs = [os.path.join(root, f'trial_{i:02d}') for i in range(k)]
  placement = trial_group.placement(k, batch, stepping=stepping).describe(k)
  t0 = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    results = trial_group.train_group(configs, workdirs, stepping=stepping)
  wall = time.perf_counter() - t0
  rates = [rate for w in workdirs for rate in [
      r['train/images_per_s'] for r in metrics.read_metrics(w) if 'train/images_per_s' in r][1:]]
  trial_step_s = batch / (k * statistics.median(rates))
  return {'stepping': stepping, 'placement': placement, 'wall_s': wall,
          'trial_step_ms': 1e3 * trial_step_s, 'trial_steps_per_s': 1 / trial_step_s,
          'trials_per_hour': 3600 * k / wall,
          'failed': [r['name'] for r in results if r['failed']]}


def _trial_group_row(r: dict) -> str:
  failed = f'; failed: {", ".join(r["failed"])}' if r['failed'] else ''
  return (f'  {r["mode"]:>10} (stepping {r["stepping"]}): {r["trial_step_ms"]:.3f} ms per '
          f'trial-step, {r["wall_s"]:.1f} s wall with compile = {r["trials_per_hour"]:.0f} '
          f'trials/hour{failed}')


def environment(out: SectionOutput) -> dict:
  """What the check runs on, and that it runs on this checkout without TensorFlow."""
  import importlib.metadata
  import jax
  import nin_jax
  from nin_jax.research import throughput  # noqa: F401 — what the sections use
  from nin_jax.research import trial_group  # noqa: F401 — what the sections use
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
  if name == 'trial_groups':
    return trial_groups(out, args.smoke)
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
    # install first, then the sections in the order they run: device_run.sh reads both.
    print('\n'.join(f'{k} {SECTION_BUDGET_S[k]}' for k in ('install', *SECTIONS)))
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
