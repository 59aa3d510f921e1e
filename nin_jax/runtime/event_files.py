"""TensorBoard event files cut back to a resumed run's start step.

A run that resumes from the checkpoint at step k trains k+1, ... again; the
events an earlier launch wrote past k came from progress the crash lost, and
TensorBoard would draw those steps twice. They are dropped, as
`train._truncate_metrics` drops them from metrics.jsonl. Files go through
etils.epath (nin_jax/runtime/storage.py): a local directory or a bucket.
"""

from __future__ import annotations

import io
import struct

from etils import epath

from nin_jax.runtime import storage


def _records(data: bytes) -> tuple[list[bytes], bool]:
  """The TFRecord payloads in `data`, and whether the last one was cut short."""
  records, at = [], 0
  while at < len(data):
    if at + 12 > len(data):
      return records, True
    (length,) = struct.unpack('<Q', data[at:at + 8])
    end = at + 12 + length + 4
    if end > len(data):
      return records, True
    records.append(data[at + 12:at + 12 + length])
    at = end
  return records, False


def drop_events_after(logdir, step: int) -> int:
  """Rewrites each event file in `logdir` without events past `step`; returns how many went."""
  from tensorboard.compat.proto import event_pb2
  from tensorboard.summary.writer.record_writer import RecordWriter
  logdir = epath.Path(logdir)
  if not logdir.is_dir():
    return 0
  dropped = 0
  for path in logdir.glob('*tfevents*'):
    if path.name.endswith('.tmp'):
      continue
    records, cut_short = _records(path.read_bytes())
    keep = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(keep) == len(records) and not cut_short:
      continue
    dropped += len(records) - len(keep) + cut_short
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for record in keep:
      writer.write(record)
    storage.write_atomic(path, buffer.getvalue())
  return dropped
