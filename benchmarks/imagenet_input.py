"""ImageNet input throughput, side by side in one run, on a generated mock ImageNet.

    python benchmarks/imagenet_input.py [--num_images=1024] [--batch=32]

Writes mock ImageNet-like JPEGs (500×375, quality 90, ~photo-sized files),
prepares them with TFDS's imagenet2012 builder (ArrayRecord) and its
pre-resized cache (nin_jax/data/imagenet_resized.py), then times the training
stream of each pipeline (decode, warp to 256², random 224 crop, mirror, mean):

- this pipeline (Grain workers over the TFDS records) at 1 and 2 workers:
  uint8 crops from the workers, handed to the train step as they are (the
  step subtracts the mean on the device: nin_jax/data/mean_subtraction.py);
- the same with the mean subtracted in the training process (the pipeline
  before that move), at 1 and 2 workers;
- the same with float32 batches made in the workers (4× the bytes through
  shared memory), at 1 worker;
- the same over the pre-resized cache, at 1 and 2 workers;
- today's pipeline before Grain (tf.data over a tf.numpy_function read);
- a plain tf.data reference: JPEGs already in memory, parallel decode_jpeg,
  resize, crop, flip, mean, at 1 and 2 threads (no reading: an upper bound).

First, where one core's time goes: milliseconds per image of each stage,
in this process, one OpenCV thread (shared memory: a batch copied into a
fresh segment and opened, as Grain hands a worker's batch over).

Every row is measured --rounds times, the rows interleaved, and the table
gives each row's median; the 1 → 2 worker scaling is taken within each round
(both rows of that round) and printed for each round and as their median.
img/s is wall-clock after a warm-up (worker start-up excluded);
img/s/core divides it by the cores the pipeline decodes on; img/CPU-s divides
the images by the CPU seconds that the process and all its children used
(the training process's own share included), which noise from other jobs on
the machine disturbs less. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nin_jax.data import grain_stream  # noqa: E402
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


def grain_pipeline(data_dir, resized_dir, workers, batch):
  data = imagenet_input.ImageNetData(data_dir, crop=CROP, workers=workers,
                                     resized_dir=resized_dir)
  return data.train_batches(batch, seed=0)


class HostMeanSubtraction:
  """The mean subtracted on the host, numpy (the device does it in the step now)."""

  def __init__(self, mean):
    mean = np.asarray(mean, np.float32)
    self.mean = np.ascontiguousarray(np.broadcast_to(mean, (256, 256, 3)))
    self.mirrored = np.ascontiguousarray(self.mean[:, ::-1])

  def __call__(self, crops: np.ndarray, where: np.ndarray) -> np.ndarray:
    crop = crops.shape[1]
    images = np.empty(crops.shape, np.float32)
    for row, (top, left, flip) in enumerate(where):
      mean, left = (self.mirrored, 256 - left - crop) if flip else (self.mean, left)
      np.subtract(crops[row], mean[top:top + crop, left:left + crop], out=images[row],
                  dtype=np.float32)
    return images


def grain_mean_on_host(data_dir, workers, batch):
  """The pipeline before the move: this process turns each batch into float32."""
  subtract = HostMeanSubtraction(imagenet_input.MEAN_RGB)
  with contextlib.closing(grain_pipeline(data_dir, '', workers, batch)) as batches:
    for raw in batches:  # Closing this generator closes the stream: the workers stop.
      yield {'image': subtract(raw['image'], raw['where']), 'label': raw['label']}


class FloatInWorker:
  """A worker's batch as float32, the mean subtracted in the worker."""

  def __init__(self, make, mean):
    self.make, self.subtract = make, HostMeanSubtraction(mean)

  def __call__(self, step):
    raw = self.make(step)
    return {'image': self.subtract(raw['image'], raw['where']), 'label': raw['label']}


def grain_float_in_workers(data_dir, workers, batch):
  images = imagenet_input.TfdsImages(data_dir, 'train')
  make = imagenet_input.TrainBatch(images, batch, slice(0, batch), 0, CROP)
  return grain_stream.stream(FloatInWorker(make, imagenet_input.MEAN_RGB), 0,
                             grain_stream.FOREVER, workers)


def stage_costs(data_dir, batch, images=64):
  """Prints ms per image of each stage of one worker (and of the training process)."""
  import cv2
  from grain.multiprocessing import SharedMemoryArray
  cv2.setNumThreads(1)
  source = imagenet_input.TfdsImages(data_dir, 'train')
  jpegs = [source[i][0] for i in range(min(images, len(source)))]
  decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
  warped = [imagenet_input.decode_warp(j) for j in jpegs]
  crops = np.zeros((batch, CROP, CROP, 3), np.uint8)
  where = np.tile(np.int32([[16, 16, 1]]), (batch, 1))
  subtract = HostMeanSubtraction(imagenet_input.MEAN_RGB)

  def through_shared_memory(array):
    shared = SharedMemoryArray(array.shape, array.dtype)
    np.copyto(shared, array)
    received = SharedMemoryArray.from_metadata(shared.metadata)
    received.unlink_on_del()

  stages = [  # (name, per image, calls, images per call)
      ('read the record', lambda i: source[i % len(jpegs)], len(jpegs), 1),
      ('decode (cv2.imdecode)', lambda i: cv2.imdecode(
          np.frombuffer(jpegs[i], np.uint8), cv2.IMREAD_COLOR), len(jpegs), 1),
      ('warp to 256² (cv2.resize, bilinear)', lambda i: cv2.resize(
          decoded[i], (256, 256), interpolation=cv2.INTER_LINEAR), len(jpegs), 1),
      ('crop + mirror, uint8', lambda i: imagenet_input.crop_into(
          warped[i], 16, 16, CROP, True, crops[0]), len(jpegs), 1),
      ('float32 batch to shared memory', lambda i: through_shared_memory(
          np.zeros(crops.shape, np.float32)), 8, batch),
      ('uint8 batch to shared memory', lambda i: through_shared_memory(crops), 8, batch),
      ('minus the mean → float32 (host, before)', lambda i: subtract(crops, where), 8,
       batch),
  ]
  print('stage of one image                              ms/img')
  for name, run, calls, per_call in stages:
    run(0)
    t0 = time.perf_counter()
    for i in range(calls):
      run(i)
    print(f'{name:46s} {(time.perf_counter() - t0) / calls / per_call * 1e3:7.3f}')


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
  parser.add_argument('--batches', type=int, default=64, help='timed batches per row')
  parser.add_argument('--rounds', type=int, default=3,
                      help='times every row is measured, interleaved (the table: medians)')
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
  stage_costs(data_dir, args.batch)
  rows = [
      ('grain, 1 worker', 1, lambda: grain_pipeline(data_dir, '', 1, args.batch)),
      ('grain, 2 workers', 2, lambda: grain_pipeline(data_dir, '', 2, args.batch)),
      ('grain, mean on the host, 1 worker', 1, lambda: grain_mean_on_host(data_dir, 1, args.batch)),
      ('grain, mean on the host, 2 workers', 2, lambda: grain_mean_on_host(data_dir, 2, args.batch)),
      ('grain, float32 from workers, 1 worker', 1,
       lambda: grain_float_in_workers(data_dir, 1, args.batch)),
      ('grain + resized cache, 1 worker', 1, lambda: grain_pipeline(data_dir, resized, 1, args.batch)),
      ('grain + resized cache, 2 workers', 2, lambda: grain_pipeline(data_dir, resized, 2, args.batch)),
      ("today's (tf.numpy_function + tf.data)", 2, lambda: todays_pipeline(data_dir, args.batch)),
      ('tf.data reference, 1 thread', 1, lambda: tf_data_reference(data_dir, 1, args.batch)),
      ('tf.data reference, 2 threads', 2, lambda: tf_data_reference(data_dir, 2, args.batch)),
  ]
  samples = {name: [] for name, _, _ in rows}
  for _ in range(args.rounds):  # Interleaved: a slow spell on a shared VM hits every row.
    for name, cores, make in rows:
      samples[name].append(measure(make(), args.batches, cores))
  print_table(rows, samples, args.rounds)
  print_scaling(samples, args.rounds)


def print_table(rows, samples, rounds: int) -> None:
  """Each row's median over the rounds: img/s, per decoding core, per CPU second."""
  print(f'{"pipeline":40s} {"cores":>5s} {"img/s":>7s} {"img/s/core":>10s} {"img/CPU-s":>9s}'
        f'   (medians of {rounds} rounds)')
  for name, cores, _ in rows:
    rate = np.median([images / wall for images, wall, _ in samples[name]])
    per_cpu = np.median([images / cpu if cpu else np.nan  # cpu: 0 at toy sizes
                         for images, _, cpu in samples[name]])
    print(f'{name:40s} {cores:5d} {rate:7.0f} {rate / cores:10.0f} {per_cpu:9.0f}', flush=True)


SCALINGS = (  # (what, one-core row, two-core row)
    ('grain', 'grain, 1 worker', 'grain, 2 workers'),
    ('grain, mean on the host', 'grain, mean on the host, 1 worker',
     'grain, mean on the host, 2 workers'),
    ('grain + cache', 'grain + resized cache, 1 worker', 'grain + resized cache, 2 workers'),
    ('tf.data reference 1→2 threads', 'tf.data reference, 1 thread',
     'tf.data reference, 2 threads'),
)


def print_scaling(samples, rounds: int) -> None:
  """Each round's 1 → 2 core speed-up (both rows of one round) and their median."""
  parts = []
  for what, one, two in SCALINGS:
    ratios = [(b[0] / b[1]) / (a[0] / a[1]) for a, b in zip(samples[one], samples[two])]
    each = ', '.join(f'{r:.2f}' for r in ratios)
    parts.append(f'{what} {np.median(ratios):.2f}× ({each})')
  print(f'1→2 workers, median of {rounds} rounds (each round): ' + '; '.join(parts) +
        f'; load average now {os.getloadavg()[0]:.1f}')

if __name__ == '__main__':
  main()
