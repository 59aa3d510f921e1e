"""`--profile_steps=A:B`: a jax.profiler trace of steps A to B-1, one annotation per step.

The trace is written under `<workdir>/profile/plugins/profile/<time>/` as
`*.xplane.pb`. Open it with TensorBoard's profile plugin or XProf:

    pip install tensorboard-plugin-profile     # or: pip install xprof
    tensorboard --logdir <workdir>/profile     # or: xprof --logdir <workdir>/profile

Steps are counted from 0 (the train loop: the state's step before the step
runs; the benchmark: the first step after compilation). While tracing, each
step is waited for inside its `StepTraceAnnotation`, so the trace viewer's
"Steps" row shows one box per step with its device time.
"""

from __future__ import annotations

import contextlib
import sys

import jax
from etils import epath

PROFILE_DIR = 'profile'


def parse_steps(text: str) -> tuple[int, int] | None:
  """'A:B' → (A, B) with 0 <= A < B; '' → None. A bad value is a ValueError."""
  if not text:
    return None
  try:
    start, stop = (int(x) for x in text.split(':'))
  except ValueError:
    raise ValueError(f'--profile_steps={text!r}: expected A:B, two step numbers') from None
  if not 0 <= start < stop:
    raise ValueError(f'--profile_steps={text!r}: need 0 <= A < B')
  return start, stop


def check_range(steps: tuple[int, int] | None, num_steps: int) -> None:
  """A range past the run's last step is a ValueError, said before anything runs."""
  if steps is not None and steps[1] > num_steps:
    raise ValueError(f'--profile_steps={steps[0]}:{steps[1]}: the run has {num_steps} steps '
                     f'(0 to {num_steps - 1}); choose A:B with B <= {num_steps}')


class StepProfiler:
  """Starts a trace before step A, stops it after step B-1 (or at close()).

  close() says which steps the trace holds: fewer than asked when the run
  resumed past A or stopped before B, none when it ran none of them.
  """

  def __init__(self, logdir, steps: tuple[int, int] | None, *, name: str = 'train'):
    self.logdir = epath.Path(logdir)
    self.steps, self.name = steps, name
    self.active = False
    self.traced = None  # (first, last) step traced so far.
    self._reported = False

  @contextlib.contextmanager
  def step(self, step: int):
    """Wraps one step; call `wait(outputs)` inside so the annotation spans its run."""
    if self.steps is None or not self.steps[0] <= step < self.steps[1]:
      yield
      return
    if not self.active:
      self.logdir.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.logdir))
      self.active = True
    with jax.profiler.StepTraceAnnotation(self.name, step_num=step):
      yield
    self.traced = (step if self.traced is None else self.traced[0], step)
    if step == self.steps[1] - 1:
      self.close()

  def wait(self, outputs) -> None:
    if self.active:
      jax.block_until_ready(outputs)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
    if self.steps is None or self._reported or jax.process_index() != 0:
      return
    self._reported = True
    asked = f'{self.steps[0]}:{self.steps[1]}'
    if self.traced is None:
      print(f'no profile written: this launch ran none of steps {asked} (it resumed '
            'past them or stopped before them)', flush=True)
      return
    traced = f'{self.traced[0]}:{self.traced[1] + 1}'
    short = '' if traced == asked else f' (asked for {asked}; this launch did not run the rest)'
    print(f'profile of steps {traced} written to {self.logdir}{short} '
          f'(open with: tensorboard --logdir {self.logdir})', flush=True)

  def trace_files(self) -> list[epath.Path]:
    return sorted(self.logdir.glob('plugins/profile/*/*.xplane.pb'))


def summarize(logdir, *, top: int = 20) -> list[tuple[str, float, int]]:
  """(XLA op kind, ms per traced step, count) from the newest trace in logdir, slowest first.

  Op names lose their numeric suffix (`dot_general.25` → `dot_general`), so a
  kind sums every instance. Steps are the StepTraceAnnotation boxes.
  """
  import collections
  import re
  from jax.profiler import ProfileData

  files = sorted(epath.Path(logdir).glob('plugins/profile/*/*.xplane.pb'))
  if not files:
    raise FileNotFoundError(f'no *.xplane.pb trace under {logdir}/plugins/profile')
  data = ProfileData.from_serialized_xspace(files[-1].read_bytes())
  total, count, steps = collections.Counter(), collections.Counter(), 0
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        if line.name.startswith('Steps') or (event.name.isidentifier() and any(
            k == 'step_num' for k, _ in event.stats)):
          steps += 1
          continue
        if event.name.startswith('ThunkExecutor') or event.name.startswith('$'):
          continue
        if plane.name.startswith('/device') or line.name.startswith('tf_XLA'):
          kind = re.sub(r'(\.\d+)+$', '', event.name.removeprefix('end: '))
          total[kind] += event.duration_ns
          count[kind] += 1
  steps = max(steps, 1)
  return [(k, t / 1e6 / steps, count[k]) for k, t in total.most_common(top)]


def print_summary(argv: list[str]) -> int:
  """`python -m nin_jax.runtime.profiling DIR`: the trace's op kinds, slowest first."""
  if len(argv) != 1:
    print('usage: python -m nin_jax.runtime.profiling PROFILE_DIR (a run\'s '
          'workdir/profile, or --profile_dir of nin-benchmark)', file=sys.stderr)
    return 2
  try:
    rows = summarize(argv[0])
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for kind, ms, n in rows:
    print(f'{ms:9.1f} ms/step  {n:6d}×  {kind}')
  return 0


if __name__ == '__main__':
  sys.exit(print_summary(sys.argv[1:]))
