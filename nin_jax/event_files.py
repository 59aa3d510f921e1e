"""TensorBoard event files cut back to a resumed run's start step.

A run that resumes from the checkpoint at step k trains k+1, ... again; the
events an earlier launch wrote past k came from progress the crash lost, and
TensorBoard would draw those steps twice. They are dropped, as
`train._truncate_metrics` drops them from metrics.jsonl.
"""

from __future__ import annotations

import os


def drop_events_after(logdir: str, step: int) -> int:
  """Rewrites each event file in `logdir` without events past `step`; returns how many went."""
  import tensorflow as tf  # Its summary writer wrote them; never touches accelerators.
  from tensorboard.compat.proto import event_pb2
  tf.config.set_visible_devices([], 'GPU')
  dropped = 0
  for path in tf.io.gfile.glob(os.path.join(logdir, '*tfevents*')):
    if path.endswith('.tmp'):
      continue
    records, cut_short = [], False
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        records.append(record)
    except tf.errors.DataLossError:  # A record cut short by a crash: drop it too.
      cut_short = True
    keep = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(keep) == len(records) and not cut_short:
      continue
    dropped += len(records) - len(keep) + cut_short
    with tf.io.TFRecordWriter(path + '.tmp') as writer:
      for record in keep:
        writer.write(record)
    tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
  return dropped
