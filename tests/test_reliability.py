"""Preemption, crashes, numerical faults and damaged checkpoints lose nothing.

Kill points are exact: `config.testing.pause_at_steps` (test-only) makes the
run print 'TESTING: paused after step N' and SIGSTOP itself right after step N
and the checkpoint save it starts; the test then SIGKILLs it there, or lets it
go on with SIGCONT. Every restart is the same command.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import REPO, TINY, make_tiny_config, read_jsonl, run_cli
from readme_blocks import page_text
from nin_jax.runtime import checkpoint
from nin_jax.train import loop as train

# Two epochs of 8 steps; checkpoints every 4 steps, eval every 8.
RUN = {**TINY, 'max_steps': 16}
PAUSES = '(4, 6, 10)'


def leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_same_state(workdir_a, workdir_b, step):
  a, b = checkpoint.load_for_inspection(workdir_a, step), checkpoint.load_for_inspection(workdir_b, step)
  for x, y in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def comparable_records(workdir):
  # Wall-clock fields differ between any two runs; everything else must not.
  return [{k: v for k, v in r.items() if k not in ('time', 'train/images_per_s')}
          for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]


class Run:
  """The CLI in a subprocess whose stdout is read line by line as it runs."""

  def __init__(self, workdir, overrides, timeout=300, logdir=None, extra_args=()):
    args = [sys.executable, os.path.join(REPO, 'experiments', 'fashion_mnist.py'),
            f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in overrides.items()]
    args += list(extra_args)
    env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
    self.stderr_path = os.path.join(logdir or os.path.dirname(str(workdir)),
                                    f'{os.path.basename(str(workdir))}.stderr')
    self._stderr = open(self.stderr_path, 'w')
    self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr,
                                 text=True, env=env, cwd=REPO)
    self.stdout = []
    self._watchdog = threading.Timer(timeout, self.proc.kill)  # Never hang the suite.
    self._watchdog.start()

  def wait_for_pause(self):
    """Reads stdout up to the next pause marker and waits until the process has
    stopped itself; returns the step (None if it exited instead)."""
    for line in self.proc.stdout:
      self.stdout.append(line)
      # A group's trial prefixes its lines with its name: '[name] TESTING: ...'.
      if line.split('] ', 1)[-1].startswith('TESTING: paused after step '):
        # The marker is printed just before SIGSTOP: a SIGCONT sent in between
        # would be lost, so wait for the stop itself.
        deadline = time.time() + 60
        while self._state() != 'T':
          assert time.time() < deadline, 'the run printed the marker but did not stop'
          time.sleep(0.01)
        return int(line.split()[-1])
    return None

  def _state(self):
    with open(f'/proc/{self.proc.pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0]

  def resume(self):
    os.kill(self.proc.pid, signal.SIGCONT)

  def finish(self):
    self.stdout += self.proc.stdout.readlines()
    self.proc.wait()
    self._watchdog.cancel()
    self._stderr.close()
    with open(self.stderr_path) as f:
      self.stderr = f.read()
    return self.proc.returncode

  def kill(self):
    self.proc.send_signal(signal.SIGKILL)
    return self.finish()

  @property
  def text(self):
    return ''.join(self.stdout)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run of the same command: what every recovery must reproduce."""
  workdir = tmp_path_factory.mktemp('reference') / 'run'
  proc = run_cli('fashion_mnist.py', workdir, RUN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(workdir)


def test_sigkill_at_three_points_then_resume_is_bit_identical(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  ckpts = os.path.join(workdir, 'checkpoints')
  command = {**RUN, 'testing.pause_at_steps': PAUSES}
  kill_at = [4, 6, 10]
  starts = []
  while True:
    run = Run(workdir, command)
    while (step := run.wait_for_pause()) is not None and step not in kill_at:
      run.resume()  # Already killed here in an earlier launch: go on.
    if step is None:
      assert run.finish() == 0, run.stderr[-3000:]
      starts.append(run.text.split('at step ')[1].split()[0])
      break
    starts.append(run.text.split('at step ')[1].split()[0])
    if step == 4:
      # Killed while the step-4 checkpoint is being written: only Orbax's
      # temporary directory exists, never a half-written `4/`.
      assert glob.glob(os.path.join(ckpts, '4.orbax-checkpoint-tmp*'))
      assert not os.path.exists(os.path.join(ckpts, '4'))
    kill_at.remove(step)
    assert run.kill() == -signal.SIGKILL
    print(f'killed with SIGKILL after step {step}; checkpoints on disk: '
          f'{sorted(os.listdir(ckpts))}')
  print('each launch started at step', starts)
  # The half-written step-4 save was discarded, so the second launch began
  # from scratch; the others resumed from the newest complete checkpoint.
  assert starts == ['0', '0', '4', '8']
  assert kill_at == []
  assert sorted(os.listdir(ckpts), key=int) == ['8', '12', '16']  # No temporary dirs left.
  assert_same_state(reference, workdir, 16)
  with open(os.path.join(reference, 'final_metrics.json')) as a, \
       open(os.path.join(workdir, 'final_metrics.json')) as b:
    assert json.load(a) == json.load(b)
  # Records written after the checkpoint a launch resumed from were dropped at
  # restart, so the log reads exactly like the uninterrupted run's.
  assert comparable_records(workdir) == comparable_records(reference)


def test_sigterm_saves_at_the_current_step_and_exits_cleanly(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  command = {**RUN, 'testing.pause_at_steps': '(5,)'}
  run = Run(workdir, command)
  assert run.wait_for_pause() == 5
  run.proc.send_signal(signal.SIGTERM)  # As a scheduler would; handled at once...
  run.resume()
  assert run.finish() == 0, run.stderr[-3000:]  # ...and step 6 is the last one.
  assert 'stopped at step 6 (preempted); rerun the same command to resume' in run.text
  assert 'preempted: checkpoint at step 6 written' in run.stderr
  assert 'Traceback' not in run.stderr
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6'))
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))

  again = Run(workdir, command)
  assert again.wait_for_pause() is None  # Step 5 is behind it.
  assert again.finish() == 0, again.stderr[-3000:]
  assert 'resuming at step 6 of 16' in again.text
  assert_same_state(reference, workdir, 16)
  # The stop logged steps 5-6 on their own, so train/ averages are grouped
  # differently from the reference; the evaluations must be identical.
  evals = lambda w: [r for r in comparable_records(w) if 'test/loss' in r]
  assert evals(workdir) == evals(reference)


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  # Checkpoints every 2 steps but the loss is only logged every 8: the NaN at
  # step 3 must still be caught before the step-4 save, not at the step-8 log.
  workdir = tmp_path / 'run'
  proc = run_cli('fashion_mnist.py', workdir, {
      **TINY, 'max_steps': 8, 'log_every_steps': 8, 'checkpoint_every_steps': 2,
      'testing.inject_nan_at_step': 3})
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert 'error: loss or gradients became NaN/Inf at step 3; stopping.' in proc.stderr
  assert 'The last good checkpoint (step 2)' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert os.listdir(workdir / 'checkpoints') == ['2']
  assert all(np.isfinite(x).all() for x in leaves(checkpoint.load_for_inspection(str(workdir), 2)))


# --- Damaged checkpoints ------------------------------------------------------

def data_files(step_dir):
  return sorted(glob.glob(os.path.join(step_dir, 'default', '**', 'd', '*'), recursive=True))


def truncate_array_data(step_dir):
  for f in data_files(step_dir):
    os.truncate(f, os.path.getsize(f) // 2)


def flip_bytes_in_array_data(step_dir):
  # Same sizes, 16 bytes inverted at a quarter, half and three quarters of every
  # data file: tensorstore itself reads this back silently. (One spot in the
  # largest file alone can land on bytes no array uses: a flaky CI run did.)
  for f in data_files(step_dir):
    size = os.path.getsize(f)
    with open(f, 'r+b') as fh:
      for offset in (size // 4, size // 2, 3 * size // 4):
        fh.seek(offset)
        chunk = fh.read(16)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in chunk))


def cut_metadata(step_dir):
  path = os.path.join(step_dir, 'default', '_METADATA')
  with open(path, 'r+') as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory):
  """A run stopped at step 8 with checkpoints at 4 and 8, and its step-8 state."""
  workdir = tmp_path_factory.mktemp('two') / 'run'
  train.train_and_evaluate(tiny(max_steps=8), str(workdir))
  return str(workdir), leaves(checkpoint.load_for_inspection(str(workdir), 8))


tiny = make_tiny_config


@pytest.mark.parametrize('damage', [truncate_array_data, flip_bytes_in_array_data,
                                    cut_metadata], ids=lambda f: f.__name__)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    two_checkpoints, tmp_path, caplog, damage):
  source, step8 = two_checkpoints
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  damage(os.path.join(workdir, 'checkpoints', '8'))
  result = train.train_and_evaluate(tiny(max_steps=8), workdir)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert any('checkpoint at step 8 cannot be read' in w and 'trying an older one' in w
             for w in warnings), warnings
  # Kept for inspection, out of the way; then steps 5-8 were trained again
  # from step 4, to exactly the state that had been lost.
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '8.corrupt-0'))
  assert result['step'] == 8
  for x, y in zip(step8, leaves(checkpoint.load_for_inspection(workdir, 8)), strict=True):
    np.testing.assert_array_equal(x, y)


def test_no_readable_checkpoint_is_a_clear_error(two_checkpoints, tmp_path):
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  truncate_array_data(str(workdir / 'checkpoints' / '8'))
  cut_metadata(str(workdir / 'checkpoints' / '4'))
  proc = run_cli('fashion_mnist.py', workdir, {**TINY, 'max_steps': 8})
  assert proc.returncode == 2
  assert 'checkpoint at step 8 cannot be read' in proc.stderr
  assert 'checkpoint at step 4 cannot be read' in proc.stderr
  assert (f'error: no readable checkpoint in {workdir}/checkpoints: steps [8, 4] '
          'are damaged') in proc.stderr
  # After a failed restore, tensorstore callbacks can land on Orbax's closed
  # asyncio loop ("Event loop is closed"): shutdown noise, not printed.
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4.corrupt-0', '8.corrupt-0']


def test_unfinished_saves_are_gone_before_the_checkpointer_returns(tmp_path, monkeypatch):
  # A crash mid-save leaves `<step>.orbax-checkpoint-tmp*`. They are removed in
  # the constructor, not by a thread still listing the directory while training
  # starts (it raced with tfds.testing.mock_data's file-system patch in CI).
  # A slow delete makes a background one visible.
  rmtree = shutil.rmtree
  monkeypatch.setattr(shutil, 'rmtree', lambda *a, **k: (time.sleep(0.5), rmtree(*a, **k)))
  ckpts = tmp_path / 'run' / 'checkpoints'
  leftover = ckpts / '4.orbax-checkpoint-tmp-1764000000'
  (leftover / 'default').mkdir(parents=True)
  (leftover / 'default' / 'data').write_bytes(b'\0' * 1024)
  (ckpts / '3').mkdir()  # Not ours to judge here: restore decides.
  checkpointer = checkpoint.Checkpointer(str(tmp_path / 'run'))
  assert sorted(os.listdir(ckpts)) == ['3']
  checkpointer.close()


def test_only_the_train_loop_asks_the_preemption_service(tmp_path, monkeypatch):
  # JAX's preemption sync keeps the last step it was told. Orbax asked too,
  # also from its finalize thread with an older step, which could make two
  # processes agree on a stop step one of them had passed (a hang).
  from jax.experimental import multihost_utils
  asked = []
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point',
                      lambda step: asked.append(step) or False)
  checkpointer = checkpoint.Checkpointer(str(tmp_path / 'run'))
  for step in (1, 2):
    checkpointer.save(step, {'w': np.arange(4.0)})
  checkpointer.close()
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['1', '2']
  assert asked == []


# --- Ctrl-C ---------------------------------------------------------------------

CTRL_C_LINE = ('Ctrl-C: saving a checkpoint at the next step, then stopping (Ctrl-C again to '
               'stop now, without saving)')

def test_ctrl_c_saves_at_the_current_step_and_the_rerun_resumes_bit_identical(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  command = {**RUN, 'testing.pause_at_steps': '(5,)'}
  run = Run(workdir, command)
  assert run.wait_for_pause() == 5
  run.proc.send_signal(signal.SIGINT)  # What Ctrl-C sends.
  run.resume()
  assert run.finish() == 130, run.stderr[-3000:]  # Non-zero: `… && next` stops.
  assert run.text.splitlines()[-1] == 'interrupted at step 6; rerun the same command to resume'
  # One line said when Ctrl-C arrives, the one above when the run has stopped.
  assert run.stderr.splitlines()[-1:] == [CTRL_C_LINE], run.stderr[-3000:]
  assert 'Traceback' not in run.stderr and 'KeyboardInterrupt' not in run.stderr
  assert 'preempted' not in run.stderr
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6'))

  again = Run(workdir, command)
  assert again.wait_for_pause() is None
  assert again.finish() == 0, again.stderr[-3000:]
  assert 'resuming at step 6 of 16' in again.text
  assert_same_state(reference, workdir, 16)


def test_a_second_ctrl_c_stops_at_once(tmp_path):
  run = Run(str(tmp_path / 'run'), {**RUN, 'testing.pause_at_steps': '(5, 6)'})
  assert run.wait_for_pause() == 5
  run.proc.send_signal(signal.SIGINT)
  run.resume()
  assert run.wait_for_pause() == 6  # The first Ctrl-C asked to stop after step 6.
  run.proc.send_signal(signal.SIGINT)
  run.resume()
  assert run.finish() == 130, run.stderr[-3000:]
  assert 'second Ctrl-C: stopping now, without saving' in run.stderr
  assert 'interrupted at step' not in run.text


TWO_SEEDS = 'from nin_jax.research import sweeps\nfrom nin_jax.configs.fashion_mnist import get_config\n\n' \
            'def sweep():\n  return sweeps.grid(seed=(0, 1))\n'


class TrialRunner:
  """nin-sweep / nin-ablation in its own process group, as a terminal runs a command:
  Ctrl-C there reaches the runner and its running trial alike."""

  def __init__(self, script, workdir, args, overrides):
    command = [sys.executable, os.path.join(REPO, 'experiments', script), f'--workdir={workdir}',
               *args, *[f'--config.{k}={v}' for k, v in overrides.items()]]
    env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
    self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env, cwd=REPO, start_new_session=True)

  def wait_for_trial_pause(self, log, step, timeout=300):
    """The pid of the running trial once it has stopped itself after `step` (its log says)."""
    deadline = time.time() + timeout
    while True:
      assert self.proc.poll() is None, self.proc.communicate()
      assert time.time() < deadline, 'the trial never paused'
      children = open(f'/proc/{self.proc.pid}/task/{self.proc.pid}/children').read().split()
      text = open(log).read() if os.path.exists(log) else ''
      if children and f'TESTING: paused after step {step}\n' in text.split('$ ')[-1]:
        with open(f'/proc/{children[0]}/stat') as f:
          if f.read().rsplit(')', 1)[1].split()[0] == 'T':
            return int(children[0])
      time.sleep(0.05)

  def ctrl_c(self, trial_pid):
    os.killpg(self.proc.pid, signal.SIGINT)  # The terminal's Ctrl-C: the whole group.
    os.kill(trial_pid, signal.SIGCONT)

  def finish(self):
    self.stdout, self.stderr = self.proc.communicate(timeout=300)
    return self.proc.returncode


RUNNER_CTRL_C_LINE = ("Ctrl-C: saving the running trial's checkpoint, then stopping (Ctrl-C "
                      'again to stop now, without saving)')


def test_ctrl_c_in_a_sweep_saves_the_running_trial_and_stops_with_one_line(tmp_path):
  (tmp_path / 'two_seeds.py').write_text(TWO_SEEDS)
  workdir = tmp_path / 'sweep'
  trial = workdir / 'trial_000_seed=0'
  runner = TrialRunner('sweep.py', workdir, [f'--config={tmp_path}/two_seeds.py'],
                       {**RUN, 'testing.pause_at_steps': '(5,)'})
  runner.ctrl_c(runner.wait_for_trial_pause(trial / 'train.log', 5))
  assert runner.finish() == 130, runner.stderr
  assert runner.stderr.splitlines() == [RUNNER_CTRL_C_LINE]  # No traceback.
  assert runner.stdout.splitlines()[-1] == (
      'interrupted: trial_000_seed=0 stopped at its last checkpoint; rerun the same command '
      'to resume')
  assert os.path.isdir(trial / 'checkpoints' / '6')  # It saved at the step it stopped at.
  assert 'interrupted at step 6; rerun the same command to resume' in (trial / 'train.log').read_text()
  assert json.loads((trial / 'status.json').read_text())['status'] == 'incomplete'
  assert not (workdir / 'trial_001_seed=1').exists()  # The sweep stopped.


def test_sigterm_to_a_sweep_stops_it_after_the_running_trial_saved(tmp_path):
  (tmp_path / 'two_seeds.py').write_text(TWO_SEEDS)
  workdir = tmp_path / 'sweep'
  trial = workdir / 'trial_000_seed=0'
  runner = TrialRunner('sweep.py', workdir, [f'--config={tmp_path}/two_seeds.py'],
                       {**RUN, 'testing.pause_at_steps': '(5,)'})
  trial_pid = runner.wait_for_trial_pause(trial / 'train.log', 5)
  runner.proc.send_signal(signal.SIGTERM)  # To the runner alone: it passes it on.
  os.kill(trial_pid, signal.SIGCONT)
  assert runner.finish() == 1, runner.stderr  # Not every trial is done.
  assert runner.stderr == ''
  assert runner.stdout.splitlines()[-1] == (
      'stopped (SIGTERM): trial_000_seed=0 stopped at its last checkpoint; rerun the same '
      'command to resume')
  assert 'stopped at step 6 (preempted)' in (trial / 'train.log').read_text()
  assert json.loads((trial / 'status.json').read_text())['status'] == 'incomplete'
  assert not (workdir / 'trial_001_seed=1').exists()


def test_a_second_ctrl_c_in_the_ablation_stops_at_once(tmp_path):
  trial = tmp_path / 'gap'
  runner = TrialRunner('ablation_head.py', tmp_path, [],
                       {**RUN, 'testing.pause_at_steps': '(5, 6)'})
  runner.ctrl_c(runner.wait_for_trial_pause(trial / 'train.log', 5))
  runner.ctrl_c(runner.wait_for_trial_pause(trial / 'train.log', 6))
  assert runner.finish() == 130, runner.stderr
  assert runner.stderr.splitlines() == [RUNNER_CTRL_C_LINE,
                                        'second Ctrl-C: stopping now, without saving']
  assert 'second Ctrl-C: stopping now, without saving' in (trial / 'train.log').read_text()
  assert not (tmp_path / 'fc').exists()


# --- One writer per workdir -----------------------------------------------------

def test_a_second_run_on_a_workdir_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
  workdir = tmp_path / 'run'
  command = {**RUN, 'max_steps': 4}
  first = Run(str(workdir), {**command, 'testing.pause_at_steps': '(2,)'})
  assert first.wait_for_pause() == 2  # Alive (stopped) and holding the workdir.
  second = run_cli('fashion_mnist.py', workdir, command)
  assert second.returncode == 2, second.stderr[-3000:]
  assert (f'error: workdir {workdir} is in use by another run: pid {first.proc.pid} on '
          f'{socket.gethostname()}, started ') in second.stderr
  assert 'Traceback' not in second.stderr
  assert first.kill() == -signal.SIGKILL  # Its lock stays behind.
  third = run_cli('fashion_mnist.py', workdir, command)
  assert third.returncode == 0, third.stderr[-3000:]
  assert 'taking over the lock' in third.stderr
  assert f'process {first.proc.pid} no longer exists' in third.stderr
  assert not (workdir / 'workdir.lock').exists()  # Released at the end.


def test_a_lock_whose_heartbeat_stopped_is_taken_over_though_its_pid_lives(tmp_path):
  # The case: a lock naming pid 1 (alive, with its real start time) whose
  # heartbeat is 80 minutes old. A live run refreshes it every 30 s.
  from nin_jax.runtime import workdir_lock
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'workdir.lock').write_text(json.dumps({
      'host': socket.gethostname(), 'pid': 1, 'process_start': workdir_lock._process_start(1),
      'started_utc': '2026-01-01 00:00:00 UTC', 'heartbeat': time.time() - 80 * 60,
      'token': 'theirs'}))
  proc = run_cli('fashion_mnist.py', workdir, {**RUN, 'max_steps': 4})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'taking over the lock' in proc.stderr
  assert re.search(r'no heartbeat for 48\d\d s although pid 1 is alive', proc.stderr)
  assert not (workdir / 'workdir.lock').exists()


# --- Config changes on resume -----------------------------------------------------

def checksums(directory):
  return {os.path.relpath(p, directory): hashlib.sha256(open(p, 'rb').read()).hexdigest()
          for p in glob.glob(os.path.join(directory, '**'), recursive=True) if os.path.isfile(p)}


def test_a_config_that_does_not_fit_the_checkpoint_is_refused_leaving_it_untouched(
    two_checkpoints, tmp_path):
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  before = checksums(workdir / 'checkpoints')
  proc = run_cli('fashion_mnist.py', workdir,
                 {**TINY, 'max_steps': 8, 'model.width_multiplier': 0.25})
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert (f'error: checkpoint at step 8 in {workdir}/checkpoints does not fit this config, '
          'changed since the checkpoint: model.width_multiplier: 0.125 (checkpoint) → 0.25 '
          '(now). Rerun with the original config, or use a new --workdir') in proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert checksums(workdir / 'checkpoints') == before  # Byte-identical, nothing set aside.
  original = run_cli('fashion_mnist.py', workdir, {**TINY, 'max_steps': 8})
  assert original.returncode == 0, original.stderr[-3000:]
  assert 'resuming at step 8 of 8' in original.stdout


def test_resuming_with_another_batch_size_is_refused_unless_accepted(two_checkpoints, tmp_path):
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  changed = {**TINY, 'max_steps': 10, 'optim.batch_size': 32}
  proc = run_cli('fashion_mnist.py', workdir, changed)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert (f'error: resuming {workdir} at step 8 with a config that changes what a step '
          'means: optim.batch_size: 64 (before) → 32 (now).') in proc.stderr
  assert '--allow_config_change' in proc.stderr
  assert json.loads((workdir / 'config.json').read_text())['optim']['batch_size'] == 64

  proc = run_cli('fashion_mnist.py', workdir, changed, extra_args=['--allow_config_change'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'config changed on resume: optim.batch_size: 64 (before) → 32 (now)' in proc.stdout
  launches = read_jsonl(workdir / 'launches.jsonl')
  assert [l['start_step'] for l in launches] == [0, 8]
  assert launches[0]['config']['optim']['batch_size'] == 64  # Steps 1-8 stay on record.
  assert launches[1]['changed'] == {'optim.batch_size': [64, 32], 'max_steps': [8, 10]}


def test_a_longer_schedule_resumes_and_says_what_the_learning_rate_does(
    two_checkpoints, tmp_path):
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  proc = run_cli('fashion_mnist.py', workdir,
                 {**TINY, 'num_epochs': 3.0, 'max_steps': 12, 'optim.schedule': 'cosine'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ('resuming at step 8 of 12 (8 per epoch; max_steps stops the 24-step schedule '
          'there)') in proc.stdout
  # Constant 0.05 over 2 epochs before; cosine over 3 epochs (24 steps) is at
  # 0.05·(1 + cos(π/3))/2 at step 8, whatever max_steps says.
  assert ('schedule changed on resume: 16 → 24 total steps; learning rate at step 8: '
          '0.05 → 0.0375') in proc.stdout


def test_deleting_the_config_files_does_not_disarm_the_resume_check(two_checkpoints, tmp_path):
  # The case: config.json removed, then a resume with another batch size.
  # The checkpoint itself carries the config that made it.
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  (workdir / 'config.json').unlink()
  history = (workdir / 'launches.jsonl').read_text()
  inference = (workdir / 'inference' / 'config.json').read_text()
  changed = {**TINY, 'optim.batch_size': 32, 'num_epochs': 3.0}
  proc = run_cli('fashion_mnist.py', workdir, changed)
  assert proc.returncode == 2, proc.stdout[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: resuming {workdir} at step 8 with a config that changes what a step means: '
      'optim.batch_size: 64 (before) → 32 (now). Rerun with the original config, use a new '
      '--workdir, or pass --allow_config_change to accept the change.')
  assert (workdir / 'launches.jsonl').read_text() == history  # Nothing recorded...
  assert (workdir / 'inference' / 'config.json').read_text() == inference  # ...or overwritten.
  (workdir / 'launches.jsonl').unlink()  # Neither record left: still refused.
  proc = run_cli('fashion_mnist.py', workdir, changed)
  assert proc.returncode == 2 and 'optim.batch_size: 64 (before) → 32 (now)' in proc.stderr


def list_launches(workdir):
  """`python -m nin_jax.train.run_history WORKDIR`, as a user runs it."""
  return subprocess.run([sys.executable, '-m', 'nin_jax.train.run_history', str(workdir)],
                        capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': REPO})


def test_a_damaged_launch_record_is_reported_by_line_and_kept_beside_the_history(
    two_checkpoints, tmp_path, caplog):
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  history = workdir / 'launches.jsonl'
  intact = history.read_text()
  cut = intact[:70]  # A second record cut short (a crash, an interrupted copy).
  history.write_text(intact + cut)
  listing = list_launches(workdir)
  assert listing.returncode == 0, listing.stderr
  assert listing.stderr.startswith(
      f'warning: {history} line 2 is damaged (not a JSON record; it reads {cut[:40]}…)')
  assert re.findall(r'^ +(\d+)  ', listing.stdout, re.M) == ['1']  # The intact launch.

  result = train.train_and_evaluate(tiny(max_steps=8), str(workdir))  # A resume (report only).
  assert result['step'] == 8
  assert any(f'{history} line 2 is damaged' in r.getMessage() and 'launches.jsonl.damaged'
             in r.getMessage() for r in caplog.records if r.levelname == 'WARNING')
  assert (workdir / 'launches.jsonl.damaged').read_text() == cut + '\n'  # Kept verbatim.
  records = read_jsonl(history)
  assert json.dumps(records[0]) + '\n' == intact and [r['start_step'] for r in records] == [0, 8]

  history.write_text(cut)  # Nothing intact: said so, naming the line.
  listing = list_launches(workdir)
  assert listing.returncode == 2
  assert listing.stderr.startswith(
      f'error: {history} line 1 is damaged (not a JSON record; it reads {cut[:40]}…)')


def test_a_successful_resume_prints_no_orbax_warnings(two_checkpoints, tmp_path):
  source, _ = two_checkpoints
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  proc = run_cli('fashion_mnist.py', workdir, {**TINY, 'max_steps': 12})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resuming at step 8 of 12' in proc.stdout
  assert 'could not be restored' not in proc.stderr, proc.stderr[-3000:]


# --- What a resume may change, and max_steps ----------------------------------------

def test_a_resume_may_change_how_steps_are_executed(tmp_path):
  # steps_per_dispatch and dataset.on_device are execution only: the resumed
  # run matches a straight single-step run within tests/test_dispatch.py's bound.
  base = {'augment.translate': 2, 'model.dropout_rate': 0.3, 'model.batch_norm': False}
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(tiny(**base, max_steps=12, steps_per_dispatch=1), str(straight))
  train.train_and_evaluate(tiny(**base, max_steps=6, steps_per_dispatch=1), str(resumed))
  result = train.train_and_evaluate(
      tiny(**base, max_steps=12, steps_per_dispatch=4, **{'dataset.on_device': True}),
      str(resumed))
  assert result['step'] == 12
  assert read_jsonl(resumed / 'launches.jsonl')[1]['changed'] == {
      'dataset.on_device': [None, True], 'max_steps': [6, 12], 'steps_per_dispatch': [1, 4]}
  a = checkpoint.load_for_inspection(str(straight), 12)['params']
  b = checkpoint.load_for_inspection(str(resumed), 12)['params']
  assert max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b))) < 1e-6


def test_max_steps_stops_the_run_early_on_the_full_runs_schedule(tmp_path):
  # A max_steps run is a prefix of the full run: the learning rate still
  # decays over num_epochs (cosine: it moves at every step).
  full, early = tmp_path / 'full', tmp_path / 'early'
  train.train_and_evaluate(tiny(**{'optim.schedule': 'cosine'}), str(full))
  result = train.train_and_evaluate(tiny(max_steps=8, **{'optim.schedule': 'cosine'}),
                                    str(early))
  assert result['step'] == 8 and not result['preempted']
  assert read_jsonl(early / 'launches.jsonl')[0]['total_steps'] == 16
  for x, y in zip(leaves(checkpoint.load_for_inspection(str(full), 8)),
                  leaves(checkpoint.load_for_inspection(str(early), 8)), strict=True):
    np.testing.assert_array_equal(x, y)


# --- TensorBoard on resume --------------------------------------------------------

def scalar_events(workdir):
  import tensorflow as tf
  events = []
  for path in glob.glob(os.path.join(workdir, 'tensorboard', '*tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      events += [(v.tag, event.step) for v in event.summary.value]
  return events


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny(max_steps=8, log_every_steps=2), workdir)
  # As if killed while saving step 8: steps 5-8 are logged but not checkpointed.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '8'))
  train.train_and_evaluate(tiny(max_steps=8, log_every_steps=2), workdir)
  # ('epoch' goes with both the train and the eval record of a step.)
  events = [e for e in scalar_events(workdir) if e[0] != 'epoch']
  assert len(events) == len(set(events)), sorted(events)
  assert sorted(step for tag, step in events if tag == 'train/loss') == [2, 4, 6, 8]


# --- Exit statuses --------------------------------------------------------------

def test_the_docs_table_every_exit_status():
  """One table (docs/reliability.md) says what each status means; the tests above and in
  test_bad_input.py, test_sweeps.py check each (0 preempted, 1 a trial not done, 2, 3, 130)."""
  section = page_text('docs/reliability.md').split('## Exit statuses', 1)[1].split('\n## ', 1)[0]
  table = [line for line in section.splitlines() if line.startswith('| ')]
  rows = {int(line.split('|')[1]): line for line in table[1:]}
  assert sorted(rows) == [0, 1, 2, 3, 130]
  for status, words in {0: 'preempted (SIGTERM)', 1: 'did not finish', 2: 'bad input',
                        3: 'NaN/Inf', 130: 'Ctrl-C (SIGINT)'}.items():
    assert words in rows[status], rows[status]


# --- No library noise when nothing is wrong ---------------------------------------

def test_predict_load_prints_nothing(trained_tiny_run):
  code = 'import sys\nfrom nin_jax.train import predict\npredict.load(sys.argv[1])\n'
  proc = subprocess.run([sys.executable, '-c', code, str(trained_tiny_run[0])],
                        capture_output=True, text=True, timeout=300, cwd=REPO,
                        env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr == '' and proc.stdout == ''


def test_the_ablation_report_probes_no_accelerator(tmp_path):
  # Three variants' directories as the runner leaves them (the report reads
  # their configs to count parameters); JAX_PLATFORMS unset, as a user's shell has it.
  from nin_jax.research import ablation
  from nin_jax.research import sweeps
  for index, (variant, overrides) in enumerate(ablation.variant_overrides().items()):
    (tmp_path / variant).mkdir()
    (tmp_path / variant / 'overrides.json').write_text(
        json.dumps({'index': index, 'overrides': overrides, 'base_overrides': []}))
    config = sweeps.apply_overrides(make_tiny_config(), overrides)
    (tmp_path / variant / 'config.json').write_text(config.to_json())
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'ablation_head.py'),
       f'--workdir={tmp_path}', '--report_only'], capture_output=True, text=True,
      timeout=300, cwd=REPO, env={**env, 'PYTHONPATH': REPO})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr == ''  # Not "Unable to initialize backend 'tpu'".
  assert '| mlpconv + FC | 0/1 |  |  | 4910 | 10926 | pending |' in proc.stdout  # Counted.


def test_a_workdir_named_in_chinese_plots_without_glyph_warnings(trained_tiny_run, tmp_path):
  import warnings
  from nin_jax.runtime import curves
  workdir = tmp_path / '实验_运行'
  workdir.mkdir()
  shutil.copy(trained_tiny_run[0] / 'metrics.jsonl', workdir / 'metrics.jsonl')
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    curves.plot_curves(str(workdir))
  assert [str(w.message) for w in caught] == []
  assert (workdir / 'curves.png').stat().st_size > 10_000


# --- A profile range that a launch only partly runs -----------------------------------

def test_a_profile_cut_short_says_which_steps_it_holds(tmp_path, capsys):
  # A resumed launch that starts inside the range, or a stop before its end,
  # traces fewer steps than asked: the report names the ones traced.
  from nin_jax.runtime import profiling
  import jax.numpy as jnp
  profiler = profiling.StepProfiler(tmp_path / 'profile', (2, 6))
  for step in (4, 5):  # Resumed at step 4.
    with profiler.step(step):
      profiler.wait(jnp.ones(3) * step)
  assert capsys.readouterr().out.startswith(
      f'profile of steps 4:6 written to {tmp_path / "profile"} (asked for 2:6; this launch '
      'did not run the rest)')
  assert len(profiler.trace_files()) == 1
  untouched = profiling.StepProfiler(tmp_path / 'none', (2, 6))
  with untouched.step(8):  # Resumed past the range.
    pass
  untouched.close()
  assert capsys.readouterr().out == ('no profile written: this launch ran none of steps 2:6 '
                                     '(it resumed past them or stopped before them)\n')
