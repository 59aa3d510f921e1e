"""Process 0's metric writes run off the step loop, and none is lost."""

import threading
import time

import pytest

from nin_jax.runtime import metrics
from nin_jax.train import loop as train


class SlowWriter:
  """A MetricWriter on slow storage: each write takes `delay` seconds."""

  def __init__(self, delay=0.2):
    self.delay, self.records, self.threads = delay, [], set()
    self.jsonl_path, self.closed = '/nowhere', False

  def write(self, step, scalars):
    time.sleep(self.delay)
    self.threads.add(threading.current_thread().name)
    self.records.append((step, scalars))

  def close(self):
    self.closed = True

  def seconds_until_due(self):
    return None  # Local: nothing waits for an upload.

  def upload_if_due(self):
    pass

  def request_upload(self):
    pass

  def upload_requested(self):
    pass


def test_writes_return_at_once_and_land_in_order_on_flush():
  slow = SlowWriter()
  writer = metrics.AsyncWriter(slow)
  t0 = time.perf_counter()
  for step in range(1, 6):
    writer.write(step, {'train/loss': float(step)})
  queued_in = time.perf_counter() - t0
  writer.flush()
  assert queued_in < slow.delay  # 5 writes of 0.2 s each took no time of the loop
  assert slow.records == [(s, {'train/loss': float(s)}) for s in range(1, 6)]
  assert slow.threads == {'metric-writer'}
  writer.close()
  assert slow.closed


def test_a_storage_error_is_raised_in_the_loop_at_the_next_flush():
  class Broken(SlowWriter):
    def write(self, step, scalars):
      raise OSError('bucket unreachable')
  writer = metrics.AsyncWriter(Broken())
  writer.write(1, {'x': 1.0})
  with pytest.raises(OSError, match='bucket unreachable'):
    writer.flush()
  writer.close()


def test_a_checkpoint_waits_for_local_writes_but_never_for_a_bucket_upload():
  local = SlowWriter(delay=0.3)
  writer = metrics.AsyncWriter(local)
  writer.write(1, {'train/loss': 1.0})
  writer.before_checkpoint()  # A local record is on disk before its checkpoint.
  assert local.records == [(1, {'train/loss': 1.0})]
  writer.close()

  class SlowBucket(SlowWriter):
    """Process 0's writer, whose work at a checkpoint takes a second."""

    def __init__(self):
      super().__init__(delay=0.0)
      self.jsonl_path, self.uploads = 'gs://bucket/run/metrics.jsonl', []

    def request_upload(self):
      time.sleep(1.0)
      self.uploads.append(threading.current_thread().name)
  bucket = SlowBucket()
  writer = metrics.AsyncWriter(bucket)
  writer.write(1, {'train/loss': 1.0})
  t0 = time.perf_counter()
  writer.before_checkpoint()
  assert time.perf_counter() - t0 < 0.5  # The save, which every host joins, starts now.
  writer.flush()
  assert bucket.uploads == ['metric-writer']
  writer.close()


def test_the_loop_writes_in_the_background_and_flushes_on_error(tiny_config, tmp_path,
                                                                monkeypatch):
  # Logs every step; the loss turns NaN at step 3, which raises out of the loop:
  # the records of steps 1 and 2 were written by the writer thread, and are
  # on disk when the error reaches the caller.
  threads = []
  real_write = metrics.MetricWriter.write

  def write(self, step, scalars):
    threads.append(threading.current_thread().name)
    time.sleep(0.5)  # Slow storage: the loop must not wait for it.
    real_write(self, step, scalars)
  monkeypatch.setattr(metrics.MetricWriter, 'write', write)
  config = tiny_config(max_steps=4, log_every_steps=1, checkpoint_every_steps=100,
                       **{'testing.inject_nan_at_step': 3})
  with pytest.raises(train.NonFiniteError):
    train.train_and_evaluate(config, str(tmp_path))
  assert threads and set(threads) == {'metric-writer'}
  steps = [r['step'] for r in metrics.read_metrics(str(tmp_path))]
  assert steps == [1, 2]
