"""Throughput and MFU of a config's train step, optionally against PyTorch.

    python experiments/benchmark.py --config=experiments/configs/cifar10.py \
        --compare_torch --config.optim.batch_size=128
    python experiments/benchmark.py --peak_tflops=989 --config.model.dtype=bfloat16
    python experiments/benchmark.py --warmup=5 --profile_steps=2:5 --profile_dir=/tmp/prof
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nin_jax import benchmark, profiling  # noqa: E402

config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'cifar10.py'),
    'Config whose model and batch size are measured.', lock_config=True)
flags.DEFINE_integer('steps', 10, 'Timed steps (median reported).')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_float('peak_tflops', 0.0, 'Peak TFLOP/s of one device for MFU (0: skip).')
flags.DEFINE_bool('compare_torch', False, 'Also time the PyTorch peer (benchmarks/).')
flags.DEFINE_integer('torch_threads', 0, 'Threads for PyTorch (0: its default).')
flags.DEFINE_string('torch_device', 'cpu', "PyTorch device: 'cpu' or 'cuda'.")
flags.DEFINE_bool('torch_compile', False, 'torch.compile the peer.')
flags.DEFINE_string('output', '', 'Also write the result as JSON here.')
flags.DEFINE_string('profile_steps', '', 'A:B traces steps A to B-1 after compilation '
                    '(warmup steps first) with jax.profiler.')
flags.DEFINE_string('profile_dir', 'workdirs/benchmark/profile',
                    'Where --profile_steps writes (tensorboard --logdir <it>).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:  # JAX's backend probing logs at INFO.
    logging.set_verbosity(logging.WARNING)
  result = benchmark.compare(
      FLAGS.config, steps=FLAGS.steps, warmup=FLAGS.warmup,
      peak_tflops=FLAGS.peak_tflops, compare_torch=FLAGS.compare_torch,
      torch_threads=FLAGS.torch_threads, torch_device=FLAGS.torch_device,
      torch_compile=FLAGS.torch_compile,
      profile_steps=profiling.parse_steps(FLAGS.profile_steps), profile_dir=FLAGS.profile_dir)
  print(benchmark.format_report(result))
  print(json.dumps(result))
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
