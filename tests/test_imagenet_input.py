"""ImageNet through Grain workers, on a tiny mock ImageNet prepared as the real
one is (TFDS's imagenet2012 builder on generated tar files, ArrayRecord).

The batches are a pure function of (seed, step): the same with 0 or 2 decode
processes, from 1 or 2 hosts, and after a SIGKILL with the workers running.
The mean image is computed once, by all hosts together, and read back.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from nin_jax.data import imagenet_input
from nin_jax.data import imagenet_mock
from nin_jax.data import imagenet_resized
from nin_jax.data import mean_image
from nin_jax.data import mean_subtraction

PROBE = os.path.join(REPO, 'tests', 'imagenet_probe.py')
NUM_TRAIN, NUM_VAL = 16, 5


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """16 training and 5 validation JPEGs of 48×64 (upscaled by the warp)."""
  return imagenet_mock.make(str(tmp_path_factory.mktemp('imagenet')), NUM_TRAIN, NUM_VAL,
                            height=48, width=64)


def take(stream, n):
  batches = [next(stream) for _ in range(n)]
  stream.close()
  return batches


def assert_same_batches(got, want):
  assert len(got) == len(want)
  for a, b in zip(got, want):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def bilinear_warp(image: np.ndarray, size: int = 256) -> np.ndarray:
  """Half-pixel-centred bilinear resize in float64 (as cv::resize and tf.image.resize)."""
  def axis(n):
    x = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(x).astype(int)
    return low, np.minimum(low + 1, n - 1), x - low
  y0, y1, wy = axis(image.shape[0])
  x0, x1, wx = axis(image.shape[1])
  image = image.astype(np.float64)
  rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
  return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def caffe_crop(warped, mean, top, left, crop, flip):
  """Caffe's data transformer in float32: the crop minus the mean at its pixels, then the mirror."""
  rows, cols = slice(top, top + crop), slice(left, left + crop)
  image = warped[rows, cols].astype(np.float32) - np.broadcast_to(mean, warped.shape)[rows, cols]
  return image[:, ::-1] if flip else image


def test_images_are_warped_to_256_cropped_mirrored_and_the_mean_subtracted(data_dir):
  from PIL import Image
  import io
  images = imagenet_input.TfdsImages(data_dir, 'train')
  jpeg, _ = images[0]
  decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'))
  warped = imagenet_input.decode_warp(jpeg)
  assert warped.shape == (256, 256, 3) and warped.dtype == np.uint8
  # Caffe's warp: OpenCV's bilinear resize, rounded to uint8 as its LMDB held it.
  assert np.abs(warped - bilinear_warp(decoded)).max() <= 1.0
  # Workers cut uint8 crops; the compiled step subtracts the mean on the device:
  # the float32 numbers of Caffe's order (mean at the crop's pixels, then mirror), bit for bit.
  rng = np.random.default_rng(0)
  for mean in (rng.uniform(0, 255, (256, 256, 3)).astype(np.float32),
               np.asarray(imagenet_input.MEAN_RGB, np.float32)):
    where = np.array([(10, 20, 1), (0, 0, 0), (32, 32, 1), (0, 32, 1), (5, 3, 0)], np.int32)
    crops = np.empty((len(where), 224, 224, 3), np.uint8)
    for row, (top, left, flip) in enumerate(where):
      imagenet_input.crop_into(warped, top, left, 224, flip, out=crops[row])
    got = np.asarray(jax.jit(mean_subtraction.MeanSubtraction(mean, warped=256))(
        {'image': crops, 'where': where}))
    assert got.dtype == np.float32
    for row, (top, left, flip) in enumerate(where):
      np.testing.assert_array_equal(got[row], caffe_crop(warped, mean, top, left, 224, flip))
  with pytest.raises(ValueError, match=r'mean image \(256, 256, 3\) of the warped images'):
    mean_subtraction.MeanSubtraction(np.zeros((224, 224, 3)), warped=256)  # A cropped mean.


def test_batches_are_caffes_float_crops_of_the_records_in_the_seeded_order(data_dir):
  """End to end, with 2 workers: uint8 crops cross to the device, and what the
  step makes of every row (data.device_input, on the mesh's sharded batch) is
  exactly what Caffe's float path made (decode, warp, crop minus the mean image
  there, mirror) from the record the seeded order names, at the crop the
  (seed, position) key draws."""
  from nin_jax.data import data_order
  from nin_jax.runtime import sharding
  mean = np.random.default_rng(1).uniform(0, 255, (256, 256, 3)).astype(np.float32)
  data = imagenet_input.ImageNetData(data_dir, crop=32, mean=mean, workers=2)
  model_input = jax.jit(data.device_input)
  on_mesh = sharding.DataParallel.create().to_global
  images = data.train_images
  for step, batch in enumerate(take(data.train_batches(4, seed=3, start_step=2), 3), 2):
    assert sorted(batch) == ['image', 'label', 'where'] and batch['image'].dtype == np.uint8
    inputs = np.asarray(model_input(on_mesh(batch)))
    assert inputs.dtype == np.float32
    records = data_order.train_indices(NUM_TRAIN, 4, 3, step)
    for row, record in enumerate(records):
      jpeg, label = images[record]
      place = imagenet_input.train_crop(3, step * 4 + row, 32)
      assert tuple(batch['where'][row]) == place
      np.testing.assert_array_equal(
          inputs[row], caffe_crop(imagenet_input.decode_warp(jpeg), mean, *place[:2],
                                  32, place[2]))
      assert batch['label'][row] == label
  last = list(data.eval_batches(4))[-1]  # 5 images: 1 real, 3 padded rows.
  centre = caffe_crop(imagenet_input.decode_warp(data.test_images[4][0]), mean, 112, 112,
                      32, False)
  np.testing.assert_array_equal(np.asarray(model_input(on_mesh(last)))[0], centre)
  assert not last['image'][1:].any() and last['mask'].tolist() == [1, 0, 0, 0]


def test_workers_make_the_batches_the_training_process_makes(data_dir):
  in_process = imagenet_input.ImageNetData(data_dir, crop=32, workers=0)
  two_workers = imagenet_input.ImageNetData(data_dir, crop=32, workers=2)
  straight = take(in_process.train_batches(4, seed=3), 6)  # 4 steps per epoch: 2 epochs.
  assert_same_batches(take(two_workers.train_batches(4, seed=3), 6), straight)
  # Resumed at step 3, the workers start there: the same batches 3, 4, 5.
  assert_same_batches(take(two_workers.train_batches(4, seed=3, start_step=3), 3),
                      straight[3:])
  assert_same_batches(list(two_workers.eval_batches(4)), list(in_process.eval_batches(4)))
  # Every training image of an epoch once, then a fresh order.
  labels = [b['label'] for b in straight]
  assert sorted(np.concatenate(labels[:4])) == sorted(np.arange(NUM_TRAIN) % 4)
  assert not all(np.array_equal(a, b) for a, b in zip(labels[:4], labels[4:]))


def test_two_hosts_each_make_their_rows_of_the_one_host_batches(data_dir, monkeypatch):
  data = imagenet_input.ImageNetData(data_dir, crop=32)
  one_host = take(data.train_batches(4, seed=1, start_step=2), 2)
  one_host_eval = list(data.eval_batches(4))
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  per_host, per_host_eval = [], []
  for p in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda p=p: p)
    per_host.append(take(data.train_batches(4, seed=1, start_step=2), 2))
    per_host_eval.append(list(data.eval_batches(4)))
  for k in range(2):
    assert_same_batches([{key: np.concatenate([per_host[0][k][key], per_host[1][k][key]])
                          for key in one_host[k]}], [one_host[k]])
  # 5 validation images in global batches of 4: 4 + 1 (3 padded, masked).
  assert [int(b['mask'].sum()) for b in one_host_eval] == [4, 1]
  for b, batch in enumerate(one_host_eval):
    assert_same_batches([{key: np.concatenate([h[b][key] for h in per_host_eval])
                          for key in batch}], [batch])


def test_resume_after_sigkill_with_workers_running_is_bit_exact(data_dir):
  """Killed while its 2 workers decode ahead, the stream resumed at the step a
  checkpoint would hold gives exactly the uninterrupted batches; no worker
  outlives the killed process."""
  import psutil
  env = {**os.environ, 'PYTHONPATH': REPO}

  def launch(start):
    return subprocess.Popen([sys.executable, PROBE, 'stream', data_dir, str(start), '2'],
                            stdout=subprocess.PIPE, text=True, env=env)

  def steps(proc, n):
    lines = [proc.stdout.readline().split() for _ in range(n)]
    return {int(step): digest for _, step, digest in lines}

  straight = launch(0)
  want = steps(straight, 9)
  straight.kill()
  straight.wait()
  run = launch(0)
  before = steps(run, 5)  # Steps 0-4 trained; the checkpoint holds step 5.
  workers = psutil.Process(run.pid).children(recursive=True)
  assert len([w for w in workers if w.is_running()]) >= 2
  run.send_signal(signal.SIGKILL)
  run.wait()
  _, alive = psutil.wait_procs(workers, timeout=30)
  assert not alive, f'workers outlived the killed process: {alive}'
  resumed = launch(5)
  after = steps(resumed, 4)
  resumed.kill()
  resumed.wait()
  print(f'killed after step 4 with {len(workers)} worker processes; resumed at 5:',
        ' '.join(after.values()))
  assert {**before, **after} == want


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_the_mean_image_of_two_processes_is_the_one_process_mean(data_dir, tmp_path):
  """Each process sums its half, the sums are added across processes: the same
  file, bit for bit, as one process computes; it is then read back, not recomputed."""
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}

  def launch(cache, out, pid, count, port):
    return subprocess.Popen(
        [sys.executable, PROBE, 'mean', data_dir, str(tmp_path / cache),
         str(tmp_path / out), str(pid), str(count), str(port)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  port = free_port()
  procs = [launch('one', 'one.npy', 0, 1, 0)] + [
      launch('two', f'two_{p}.npy', p, 2, port) for p in (0, 1)]
  for proc in procs:
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
  one = np.load(tmp_path / 'one.npy')
  two = [np.load(tmp_path / f'two_{p}.npy') for p in (0, 1)]
  files = sorted(os.listdir(tmp_path / 'two'))
  images = imagenet_input.TfdsImages(data_dir, 'train')
  direct = np.mean([imagenet_input.decode_warp(images[i][0]) for i in range(len(images))],
                   axis=0, dtype=np.float64)
  print(f'one process: mean {one.mean():.4f}; two processes: {two[0].mean():.4f} and '
        f'{two[1].mean():.4f}, max |difference| {np.abs(two[0] - one).max()}; '
        f'written: {files}')
  np.testing.assert_array_equal(two[0], one)
  np.testing.assert_array_equal(two[1], one)
  np.testing.assert_allclose(one, direct, rtol=1e-6)
  assert files == [f'mean_image_imagenet2012_{NUM_TRAIN}_256.npy']
  read = []
  again = mean_image.imagenet_mean_image(Recorded(images, read), tmp_path / 'two')
  np.testing.assert_array_equal(again, one)
  assert read == []  # Read back: no image decoded.


class Recorded:
  """A split that notes every record it gives out."""

  def __init__(self, images, read):
    self.images, self.read = images, read
    self.name, self.directory = images.name, images.directory

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    self.read.append(int(index))
    return self.images[index]


def test_the_pre_resized_cache_feeds_the_same_preprocessing(data_dir, tmp_path):
  # A large image gets its short side cut to 256 (aspect kept), a small one is kept.
  rng = np.random.default_rng(0)
  large = imagenet_mock.jpeg(rng, 300, 400, 90)
  record = imagenet_resized.resize_record(large, 7)
  import cv2
  image = cv2.imdecode(np.frombuffer(record[4:], np.uint8), cv2.IMREAD_COLOR)
  assert image.shape == (256, 341, 3) and record[:4] == (7).to_bytes(4, 'little')
  info = imagenet_resized.convert(data_dir, str(tmp_path / 'cache'), workers=0,
                                  records_per_shard=6)
  assert info['splits']['train'] == {'num_examples': NUM_TRAIN, 'shards': [
      f'train.array_record-0000{s}-of-00003' for s in range(3)]}
  # The mock's 48×64 images are below 256, so kept byte for byte: the same batches.
  cached = imagenet_input.ImageNetData(data_dir, crop=32, resized_dir=str(tmp_path / 'cache'))
  tfds_read = imagenet_input.ImageNetData(data_dir, crop=32)
  assert (cached.num_train, cached.num_test) == (NUM_TRAIN, NUM_VAL)
  assert_same_batches(take(cached.train_batches(4, seed=0), 5),
                      take(tfds_read.train_batches(4, seed=0), 5))
  assert_same_batches(list(cached.eval_batches(4)), list(tfds_read.eval_batches(4)))


def test_the_cache_command_says_what_is_missing_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'nin_jax.data.imagenet_resized', f'--data_dir={tmp_path / "none"}',
       f'--out_dir={tmp_path / "cache"}'], capture_output=True, text=True,
      env={**os.environ, 'PYTHONPATH': REPO}, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'error: imagenet2012 is not prepared in')
  assert 'Traceback' not in proc.stderr


def test_the_input_benchmark_measures_every_pipeline_side_by_side(tmp_path):
  """benchmarks/imagenet_input.py at toy size: every row, and the scaling line (not its speed)."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'benchmarks', 'imagenet_input.py'),
       '--num_images=32', '--batch=4', '--batches=2', '--rounds=2', f'--dir={tmp_path}'],
      capture_output=True, text=True, timeout=600, cwd=REPO,
      env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-3000:]
  for row in ('grain, 1 worker', 'grain, 2 workers', 'grain + resized cache, 2 workers',
              "today's (tf.numpy_function + tf.data)", 'tf.data reference, 2 threads'):
    assert any(line.startswith(row) for line in result.stdout.splitlines()), result.stdout
  scaling = result.stdout.split('1→2 workers, median of 2 rounds (each round): ')[1]
  for what in ('grain', 'grain, mean on the host', 'grain + cache', 'tf.data reference'):
    assert f'{what} ' in scaling, scaling
