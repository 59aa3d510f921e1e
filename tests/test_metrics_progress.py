"""The progress line's img/s is the training speed: eval and checkpoint time are left out."""

import io

from nin_jax.runtime import metrics


def test_img_per_s_excludes_paused_time(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(metrics.time, 'time', lambda: clock[0])
  progress = metrics.Progress(total_steps=40, steps_per_epoch=10, global_batch=8,
                              start_step=0, stream=io.StringIO(), enabled=True)
  clock[0] += 2.0                       # 10 steps of 8 images in 2 s
  assert progress.report(10, {}) == 40.0
  with progress.paused():               # an eval and a checkpoint save: 30 s
    clock[0] += 30.0
  clock[0] += 2.0                       # 10 more steps in 2 s
  assert progress.report(20, {}) == 40.0
  clock[0] += 4.0                       # unpaused time counts
  assert progress.report(30, {}) == 20.0
