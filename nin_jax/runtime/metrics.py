"""Where numbers go: TensorBoard, a JSONL file and the console (plots: curves.py).

Only process 0 writes; the others construct a writer that does nothing, so
the train loop never asks which process it is. Files go through etils.epath
(nin_jax/runtime/storage.py), so a workdir may be a local directory or a gs:// bucket.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import time

import jax
from etils import epath

from nin_jax.runtime import storage

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


class MetricWriter:
  """Scalars to TensorBoard event files and to workdir/metrics.jsonl.

  Both are `storage.AppendedFile`s: a local workdir gets each record at once;
  a bucket gets them every `upload_every_s`, at checkpoints
  (`request_upload`) and at `close`.
  """

  def __init__(self, workdir, *, enabled: bool | None = None,
               upload_every_s: float = storage.UPLOAD_EVERY_S):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    workdir = storage.workdir_path(workdir)
    self.jsonl_path = workdir / METRICS_FILE
    self._tb = None
    self._files: list[storage.AppendedFile] = []
    if self.enabled:
      workdir.mkdir(parents=True, exist_ok=True)
      self._jsonl = storage.AppendedFile(self.jsonl_path, upload_every_s=upload_every_s)
      self._tb = EventFile(workdir / TENSORBOARD_DIR, upload_every_s=upload_every_s)
      self._files = [self._jsonl, self._tb.file]

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """One record: {'step': step, **scalars} (names like 'train/loss')."""
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.append(json.dumps({'step': int(step), 'time': time.time(), **scalars}) + '\n')
    self._tb.write_scalars(int(step), scalars)

  def seconds_until_due(self) -> float | None:
    """Until a bucket's next upload; None when nothing waits."""
    waits = [s for s in (f.seconds_until_due() for f in self._files) if s is not None]
    return min(waits, default=None)

  def upload_if_due(self) -> None:
    for f in self._files:
      f.upload_if_due()

  def request_upload(self) -> None:
    """At a checkpoint: the records so far go up once the last upload is 10 s old."""
    for f in self._files:
      f.request_upload()

  def upload_requested(self) -> None:
    """An upload `request_upload` asked for, now."""
    for f in self._files:
      f.upload_requested()

  def upload_all(self) -> None:
    for f in self._files:
      f.upload_all()

  def write_hparams(self, config, trial_id: str = '') -> None:
    """The config's flattened fields as TensorBoard hparams (the HParams view).

    The view pairs them with the run's scalars (test/accuracy, train/loss...),
    whose last values are the final metrics, so a sweep's trials compare there.
    """
    if not self.enabled:
      return
    # summary_v2, not hparams.api: the api module imports TensorFlow (its Keras callback).
    from tensorboard.plugins.hparams import summary_v2
    self._tb.write_summary(0, summary_v2.hparams_pb(flatten_hparams(config),
                                                    trial_id=trial_id or None))

  def close(self) -> None:
    self.upload_all()  # Locally every write is already on disk.


class EventFile:
  """A TensorBoard event file (TFRecord-framed Event protos), written through epath.

  TensorFlow's summary writer reaches gs:// only through its own GCS client,
  whose endpoint is built in; this writes the same format with tensorboard's
  protos to any epath path, as a `storage.AppendedFile` (`file`).
  """

  def __init__(self, logdir: epath.Path, *, upload_every_s: float = storage.UPLOAD_EVERY_S):
    from tensorboard.compat.proto import event_pb2
    self._event_pb2 = event_pb2
    logdir.mkdir(parents=True, exist_ok=True)
    self.path = logdir / (f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}'
                          f'.{os.getpid()}.v2')
    self.file = storage.AppendedFile(self.path, upload_every_s=upload_every_s)
    self._append([event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2')])

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import summary_v2
    summary = summary_pb2.Summary()
    for name, value in scalars.items():
      summary.value.extend(summary_v2.scalar_pb(name, value).value)
    self._append([self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary)])

  def write_summary(self, step: int, summary) -> None:
    """One tensorboard Summary proto (e.g. the HParams plugin's) at `step`."""
    self._append([self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary)])

  def _append(self, events) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter
    buffer = io.BytesIO()
    records = RecordWriter(buffer)
    for event in events:
      records.write(event.SerializeToString())
    self.file.append(buffer.getvalue())


class AsyncWriter:
  """Runs a writer's writes (and any other storage work) in one background thread.

  The step loop only queues records, so a slow disk or bucket never stalls it
  (nor, through the next collective, every other host). Work runs in the order
  it was queued; between jobs the thread makes a bucket's timed uploads.
  `flush()` waits until everything queued is done; `close()` (at the end and
  on error) flushes, then closes the writer, which uploads what is left. An
  error in the thread is raised by the next write, flush or close.
  """

  def __init__(self, writer: MetricWriter):
    import queue
    import threading
    self._writer = writer
    self._queue: queue.Queue = queue.Queue()
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._work, name='metric-writer', daemon=True)
    self._thread.start()

  @property
  def jsonl_path(self) -> str:
    return self._writer.jsonl_path

  def _work(self) -> None:
    import queue
    while True:
      try:
        job = self._queue.get(timeout=self._writer.seconds_until_due())
      except queue.Empty:  # Idle, and an upload is due.
        self._run(self._writer.upload_if_due)
        continue
      if job is None:
        self._queue.task_done()
        return
      self._run(job)
      self._run(self._writer.upload_if_due)
      self._queue.task_done()

  def _run(self, job) -> None:
    try:
      if self._error is None:
        job()
    except BaseException as e:  # Raised in the caller's thread at its next call.
      self._error = e

  def _raise_error(self) -> None:
    if self._error is not None:
      error, self._error = self._error, None
      raise error

  def submit(self, fn, *args) -> None:
    """Queues fn(*args) (e.g. a plot) to run after the writes queued before it."""
    self._raise_error()
    self._queue.put(lambda: fn(*args))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Queues one record; same contract as MetricWriter.write."""
    self.submit(self._writer.write, step, dict(scalars))

  def write_hparams(self, config, **kwargs) -> None:
    """Queues MetricWriter.write_hparams."""
    self.submit(lambda: self._writer.write_hparams(config, **kwargs))

  def before_checkpoint(self) -> None:
    """Records so far go out with the checkpoint about to be saved.

    Locally, this waits until they are written: a run killed after the save
    resumes there and never writes them again. A bucket's upload is only
    asked for (`MetricWriter.request_upload`: within 10 s): the save, which
    every host joins, never waits on process 0's uploads.
    """
    self.submit(self._writer.request_upload)
    if not storage.is_remote(self._writer.jsonl_path):
      self.flush()

  def upload(self) -> None:
    """Queues the upload of everything written so far (before reading it back)."""
    self.submit(self._writer.upload_all)

  def flush(self) -> None:
    """Blocks until everything queued so far is done, an asked-for upload included."""
    self.submit(self._writer.upload_requested)
    self._queue.join()
    self._raise_error()

  def __enter__(self) -> 'AsyncWriter':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc is None:
      self.flush()
      return
    try:  # On error: write what was queued, then let the error propagate.
      self.close()
    except Exception as e:  # pylint: disable=broad-except
      print(f'warning: metrics not fully written: {e}', file=sys.stderr)

  def close(self) -> None:
    if self._thread.is_alive():
      self._queue.put(None)
      self._thread.join()
    self._writer.close()
    self._raise_error()


def flatten_hparams(config) -> dict[str, bool | int | float | str]:
  """{'optim.learning_rate': 0.1, 'model.fc_hidden': '(256,)', ...}: HParams' value types."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if hasattr(value, 'items'):
        walk(value, f'{prefix}{key}.')
      elif isinstance(value, (bool, int, float, str)):
        out[f'{prefix}{key}'] = value
      else:
        out[f'{prefix}{key}'] = str(tuple(value) if isinstance(value, list) else value)
  walk(config, '')
  return out


def read_metrics(workdir_or_file) -> list[dict]:
  """All records of a run's metrics.jsonl (later records of a step win on resume)."""
  path = storage.workdir_path(workdir_or_file)
  if path.is_dir():
    path = path / METRICS_FILE
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def console(message: str) -> None:
  """A line for the user, from process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class Progress:
  """The console line: step, epoch, loss, accuracy, img/s, ETA.

  Throughput counts only the steps since the last report, so a resumed run
  does not distort it, and time spent inside `paused()` (evals, checkpoint
  saves) is left out: img/s is the training speed.
  """

  def __init__(self, total_steps: int, steps_per_epoch: int, global_batch: int,
               start_step: int, *, stream=sys.stdout, enabled: bool | None = None):
    self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
    self.global_batch = global_batch
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._stream = stream
    self._last_step, self._last_time = start_step, time.time()

  @contextlib.contextmanager
  def paused(self):
    """Time spent in this block does not count against training throughput."""
    start = time.time()
    try:
      yield
    finally:
      self._last_time += time.time() - start

  def report(self, step: int, scalars: dict[str, float]) -> float:
    """Prints the line for `step` (steps done) and returns images/s since the last."""
    now = time.time()
    images_per_s = (step - self._last_step) * self.global_batch / max(now - self._last_time, 1e-9)
    eta = (self.total_steps - step) * self.global_batch / max(images_per_s, 1e-9)
    self._last_step, self._last_time = step, now
    if self.enabled:
      parts = [f'step {step}/{self.total_steps}',
               f'epoch {step / self.steps_per_epoch:.2f}']
      parts += [f'{k.split("/")[-1]} {v:.4g}' for k, v in scalars.items()]
      parts += [f'{images_per_s:.1f} img/s', f'ETA {format_duration(eta)}']
      print(' | '.join(parts), file=self._stream, flush=True)
    return images_per_s
