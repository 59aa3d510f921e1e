"""ImageNet input throughput, side by side in one run, on a generated mock ImageNet.

    python benchmarks/imagenet_input.py [--num_images=1024] [--batch=32]

Writes mock ImageNet-like JPEGs (500×375, quality 90, ~photo-sized files),
prepares them with TFDS's imagenet2012 builder (ArrayRecord) and its
pre-resized cache (nin_jax/data/imagenet_resized.py), then times the training
stream of each pipeline (decode, warp to 256², random 224 crop, mirror, mean):

- this pipeline (Grain workers over the TFDS records) at 1 and 2 workers;
- the same over the pre-resized cache, at 1 and 2 workers;
- today's pipeline before Grain (tf.data over a tf.numpy_function read);
- a plain tf.data reference: JPEGs already in memory, parallel decode_jpeg,
  resize, crop, flip, mean, at 1 and 2 threads (no reading: an upper bound).

img/s is wall-clock after a warm-up (worker start-up excluded);
img/s/core divides it by the cores the pipeline decodes on; img/CPU-s divides
the images by the CPU seconds that the process and all its children used
(the training process's own share included), which noise from other jobs on
the machine disturbs less. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nin_jax.data import imagenet_input  # noqa: E402
from nin_jax.data import imagenet_mock  # noqa: E402
from nin_jax.data import imagenet_resized  # noqa: E402
from nin_jax.runtime import tensorflow_loader  # noqa: E402

CROP = 224


def cpu_seconds() -> float:
  """CPU time of this process and every live descendant (workers included)."""
  me = psutil.Process()
  total = 0.0
  for p in [me] + me.children(recursive=True):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def measure(batches, num_batches: int, cores: int) -> tuple[int, float, float]:
  """(images, wall seconds, CPU seconds) of `num_batches` after the warm-up.

  Warm-up: every worker started and its buffer drained once, so neither the
  start-up nor batches made before the clock started are counted.
  """
  for _ in range(2 * cores + 1):
    next(batches)
  cpu0, t0 = cpu_seconds(), time.perf_counter()
  images = sum(len(next(batches)['label']) for _ in range(num_batches))
  wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
  batches.close()
  return images, wall, cpu


def grain_stream(data_dir, resized_dir, workers, batch):
  data = imagenet_input.ImageNetData(data_dir, crop=CROP, workers=workers,
                                     resized_dir=resized_dir)
  return data.train_batches(batch, seed=0)


def todays_pipeline(data_dir, batch):
  """The pipeline before Grain (fa6186c): one tf.numpy_function read per record."""
  tf = _tf()
  source = imagenet_input.TfdsImages(data_dir, 'train')
  n = len(source)

  def positions():
    for step in range(10**9):
      order = np.random.default_rng([0, step * batch // n]).permutation(n)
      for row in range(batch):
        position = step * batch + row
        yield position, int(order[position % n])

  def read(record):
    jpeg, label = source[int(record)]
    return jpeg, np.int32(label)

  def prepare(position, record):
    jpeg, label = tf.numpy_function(read, [record], (tf.string, tf.int32), stateful=True)
    key = tf.stack([tf.constant(1_000_003, tf.int64), position])
    return {'image': _tf_train_transform(tf.io.decode_jpeg(jpeg, channels=3), key),
            'label': tf.reshape(label, ())}

  ds = tf.data.Dataset.from_generator(
      positions, output_signature=(tf.TensorSpec((), tf.int64),) * 2)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return _numpy(ds.batch(batch, drop_remainder=True).prefetch(2))


def tf_data_reference(data_dir, threads, batch):
  """Plain tf.data: in-memory JPEGs, parallel decode_jpeg, resize, crop, flip, mean."""
  tf = _tf()
  source = imagenet_input.TfdsImages(data_dir, 'train')
  jpegs = [source[i][0] for i in range(len(source))]
  labels = [source[i][1] for i in range(len(source))]
  ds = tf.data.Dataset.from_tensor_slices((jpegs, labels)).repeat().enumerate()
  ds = ds.map(lambda i, x: {'image': _tf_train_transform(tf.io.decode_jpeg(x[0], channels=3),
                                                         tf.stack([tf.constant(0, tf.int64), i])),
                            'label': x[1]},
              num_parallel_calls=threads, deterministic=True)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  return _numpy(ds.with_options(options).batch(batch).prefetch(2))


def _tf_train_transform(image, key):
  tf = _tf()
  image = tf.image.resize(tf.cast(image, tf.float32), (256, 256))
  image -= tf.constant(imagenet_input.MEAN_RGB, tf.float32)
  image = tf.image.stateless_random_crop(image, (CROP, CROP, 3), seed=key)
  return tf.image.stateless_random_flip_left_right(image, seed=key + 1)


def _numpy(ds):
  import tensorflow_datasets as tfds
  def batches():
    yield from tfds.as_numpy(ds)
  return batches()


def _tf():
  return tensorflow_loader.tensorflow()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_images', type=int, default=1024, help='mock training images')
  parser.add_argument('--batch', type=int, default=32, help='images per batch')
  parser.add_argument('--batches', type=int, default=24, help='timed batches per row')
  parser.add_argument('--dir', default='', help='keep the mock data here (default: a temp dir)')
  args = parser.parse_args()
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain reads absl flags; their defaults apply here.
  root = args.dir or tempfile.mkdtemp(prefix='imagenet_bench_')
  data_dir, resized = os.path.join(root, 'tfds'), os.path.join(root, 'resized')
  if not os.path.isdir(os.path.join(data_dir, 'imagenet2012')):
    t0 = time.time()
    imagenet_mock.make(data_dir, args.num_images, 8, height=375, width=500, quality=90)
    imagenet_resized.convert(data_dir, resized, workers=2)
    print(f'mock ImageNet ({args.num_images} images) and its cache in {time.time() - t0:.0f}s')
  train = imagenet_input.TfdsImages(data_dir, 'train')
  sizes = [len(train[i][0]) for i in range(min(64, len(train)))]
  print(f'{root}: JPEG mean {np.mean(sizes) / 1e3:.0f} kB; host {psutil.cpu_count()} cores, '
        f'load average {os.getloadavg()[0]:.1f}')
  rows = [
      ('grain, 1 worker', 1, lambda: grain_stream(data_dir, '', 1, args.batch)),
      ('grain, 2 workers', 2, lambda: grain_stream(data_dir, '', 2, args.batch)),
      ('grain + resized cache, 1 worker', 1, lambda: grain_stream(data_dir, resized, 1, args.batch)),
      ('grain + resized cache, 2 workers', 2, lambda: grain_stream(data_dir, resized, 2, args.batch)),
      ("today's (tf.numpy_function + tf.data)", 2, lambda: todays_pipeline(data_dir, args.batch)),
      ('tf.data reference, 1 thread', 1, lambda: tf_data_reference(data_dir, 1, args.batch)),
      ('tf.data reference, 2 threads', 2, lambda: tf_data_reference(data_dir, 2, args.batch)),
  ]
  results = {}
  print(f'{"pipeline":40s} {"cores":>5s} {"img/s":>7s} {"img/s/core":>10s} {"img/CPU-s":>9s}')
  for name, cores, make in rows:
    images, wall, cpu = measure(make(), args.batches, cores)
    results[name] = images / wall
    print(f'{name:40s} {cores:5d} {images / wall:7.0f} {images / wall / cores:10.0f} '
          f'{images / cpu if cpu else float("nan"):9.0f}', flush=True)  # cpu: 0 at toy sizes
  scale = lambda a, b: results[b] / results[a]  # noqa: E731
  print(f'1→2 workers: grain {scale("grain, 1 worker", "grain, 2 workers"):.2f}×, '
        f'grain + cache {scale("grain + resized cache, 1 worker", "grain + resized cache, 2 workers"):.2f}×, '
        f'tf.data reference 1→2 threads '
        f'{scale("tf.data reference, 1 thread", "tf.data reference, 2 threads"):.2f}×; '
        f'load average now {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  main()
