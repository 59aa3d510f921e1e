"""A resumed run's outputs cut back to the step it starts from.

A run that resumes from the checkpoint at step k trains k+1, ... again. The
records an earlier launch wrote past k (metrics.jsonl lines, TensorBoard
events) came from progress the crash lost: the resumed run writes them again,
and TensorBoard would draw those steps twice. `rewind_outputs` drops them, so
each file keeps one record per step and kind, in order. Files go through
etils.epath (nin_jax/runtime/storage.py): a local directory or a bucket, and each
is replaced atomically, so a second crash leaves the old file or the new one.
"""

from __future__ import annotations

import io
import json
import struct

from etils import epath

from nin_jax.runtime import metrics
from nin_jax.runtime import storage


def rewind_outputs(workdir, step: int) -> None:
  """Drops every record past `step` from workdir's metrics.jsonl and event files."""
  workdir = epath.Path(workdir)
  _truncate_jsonl(workdir / metrics.METRICS_FILE, step)
  _drop_events_after(workdir / metrics.TENSORBOARD_DIR, step)


def _truncate_jsonl(path, step: int) -> None:
  """Keeps the records of steps <= `step`; a line cut short by the crash goes too."""
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        keep.append(line if line.endswith('\n') else line + '\n')
    except (ValueError, KeyError, TypeError):
      pass
  if keep != lines:
    storage.write_atomic(path, ''.join(keep))


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


def _drop_events_after(logdir, step: int) -> int:
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
