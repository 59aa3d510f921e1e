"""Scale-out on CPU: the same run on 1 device, on 8 devices and on 2 processes.

Dropout and augmentation are on, so these also show that every random bit is a
function of (seed, step, example) and not of how the batch is split. The
multi-process runs are real `jax.distributed` pairs on 127.0.0.1 (2 CPU devices
each, CPU collectives over Gloo) running the command line end to end.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, TINY, read_jsonl, run_cli
from nin_jax.runtime import checkpoint
from nin_jax.runtime import sharding

# The randomness a data-parallel split could get wrong, switched on.
RANDOM = {**TINY, 'model.dropout_rate': 0.5, 'augment.translate': 2,
          'augment.flip': True}
STEPS = 8
PAIR_TIMEOUT_S = 420  # Far above the ~1-2 min a pair takes on a loaded 2-core box.


@pytest.fixture(scope='module')
def cache_env(tmp_path_factory):
  # Several runs below compile the same programs; JAX's persistent compilation
  # cache (results are identical, only compile time is saved) pays for it once.
  return {'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('jax_cache')),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory, cache_env):
  """The reference: 1 process, 1 device, STEPS steps, dropout + augmentation."""
  workdir = tmp_path_factory.mktemp('one_device')
  proc = run_cli('fashion_mnist.py', workdir, {**RANDOM, 'max_steps': STEPS},
                 devices=1, env=cache_env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def train_losses(workdir):
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return {r['step']: r['train/loss'] for r in records if 'train/loss' in r}


def assert_same_model(workdir_a, workdir_b, step):
  """Params and batch-norm statistics agree up to float32 reduction order."""
  a = checkpoint.load_for_inspection(str(workdir_a), step)
  b = checkpoint.load_for_inspection(str(workdir_b), step)
  worst = 0.0
  for part in ('params', 'batch_stats'):
    for x, y in zip(jax.tree.leaves(a[part]), jax.tree.leaves(b[part])):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-3)
      worst = max(worst, float(np.max(np.abs(np.asarray(x) - np.asarray(y)))))
  print(f'max |param difference| at step {step}: {worst:.3g}')


def test_random_bits_do_not_depend_on_sharding():
  # The default since JAX 0.5; without it jax.random would give a sharded array
  # other bits than an unsharded one and no multi-device run could match.
  assert jax.config.jax_threefry_partitionable


def test_multi_process_flags_must_come_together():
  # The flags are for clusters jax does not detect (tests/test_cluster_detection.py
  # covers those it does); a partial set is a clear error.
  with pytest.raises(ValueError, match='needs all of --coordinator_address'):
    sharding.maybe_initialize_distributed('127.0.0.1:1234', 2, -1)


def test_eight_devices_match_one_device_with_dropout_and_augmentation(
    one_device_run, tmp_path, cache_env):
  proc = run_cli('fashion_mnist.py', tmp_path, {**RANDOM, 'max_steps': STEPS},
                 devices=8, env=cache_env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '8 cpu device(s) in 1 process(es)' in proc.stdout
  model = json.loads((tmp_path / 'config.json').read_text())
  assert model['model']['dropout_rate'] == 0.5 and model['augment']['flip']
  one, eight = train_losses(one_device_run), train_losses(tmp_path)
  assert sorted(one) == sorted(eight) == [4, 8]
  print('max |loss difference|:', max(abs(one[s] - eight[s]) for s in one))
  np.testing.assert_allclose([eight[s] for s in sorted(eight)],
                             [one[s] for s in sorted(one)], rtol=1e-4)
  assert_same_model(one_device_run, tmp_path, STEPS)


@pytest.mark.parametrize('version, backend, warns', [
    ((0, 12, 1), 'cpu', True), ((0, 11, 2), 'cpu', False), ((0, 12, 1), 'gpu', False)])
def test_a_multi_process_cpu_run_under_jax_0_12_is_warned_of_its_hang(
    monkeypatch, caplog, version, backend, warns):
  # docs/reliability.md: jax 0.12.1's XLA:CPU hung 2-process runs in Gloo.
  monkeypatch.setattr(jax, '__version_info__', version)
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  with caplog.at_level('WARNING'):
    sharding._warn_of_cpu_collective_hang()
  assert ('Gloo all-reduce' in caplog.text) == warns


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Pair:
  """The processes of one `jax.distributed` run (two, or `processes`) of
  experiments/fashion_mnist.py (or `script`, which takes its flags), 2 CPU
  devices each; `process_env[pid]` adds to process pid's environment."""

  def __init__(self, workdir, overrides, logdir, *, extra_args=(), env=None,
               processes=2, script=None, process_env=None):
    port = free_port()
    self.logs = []
    self.procs = []
    script = script or os.path.join(REPO, 'experiments', 'fashion_mnist.py')
    for pid in range(processes):
      env_p = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu',
               'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
               # The processes find each other as on a cluster jax detects: through
               # jax's coordinator variable, with JAX_NUM_PROCESSES / JAX_PROCESS_ID.
               'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
               'JAX_NUM_PROCESSES': str(processes), 'JAX_PROCESS_ID': str(pid),
               # The coordinator listens on loopback only, not on every interface.
               'JAX_COORDINATOR_BIND_ADDRESS': f'127.0.0.1:{port}', **(env or {}),
               **((process_env or {}).get(pid, {}))}
      args = [sys.executable, script, f'--workdir={workdir}',
              *[f'--config.{k}={v}' for k, v in overrides.items()], *extra_args]
      out, err = (os.path.join(logdir, f'p{pid}.{s}') for s in ('out', 'err'))
      self.logs.append((out, err))
      with open(out, 'w') as fo, open(err, 'w') as fe:
        # Own session: the finally below can kill each one's whole group.
        self.procs.append(subprocess.Popen(args, stdout=fo, stderr=fe, env=env_p,
                                           cwd=REPO, start_new_session=True))

  def stdout(self, pid):
    with open(self.logs[pid][0]) as f:
      return f.read()

  def stderr(self, pid):
    with open(self.logs[pid][1]) as f:
      return f.read()

  def wait(self, timeout=PAIR_TIMEOUT_S):
    deadline = time.time() + timeout
    try:
      return [p.wait(timeout=max(1, deadline - time.time())) for p in self.procs]
    except subprocess.TimeoutExpired:  # Say where each process was.
      raise AssertionError(f'the pair did not exit within {timeout} s:\n' + '\n'.join(
          f'--- process {pid} ({"running" if p.poll() is None else p.returncode}) '
          f'stdout:\n{self.stdout(pid)[-1500:]}\n--- stderr:\n{self.stderr(pid)[-3000:]}'
          for pid, p in enumerate(self.procs))) from None

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def run_pair(workdir, overrides, logdir, *, timeout=PAIR_TIMEOUT_S, **kwargs):
  os.makedirs(logdir, exist_ok=True)
  pair = Pair(workdir, overrides, logdir, **kwargs)
  try:
    codes = pair.wait(timeout)
  finally:
    pair.kill()
  for pid in range(len(codes)):
    assert codes[pid] == 0, f'process {pid}:\n' + pair.stderr(pid)[-3000:]
  return pair


def final_line(text):
  return [l for l in text.splitlines() if l.startswith('final test accuracy')]


@pytest.mark.core
@pytest.mark.cpu_processes
def test_two_processes_match_one_process_and_resume(one_device_run, tmp_path, cache_env):
  # Two processes × 2 devices run steps 0-4, stop, and a second pair resumes
  # to step 8: the result must be the 1-process, 1-device run's.
  workdir = tmp_path / 'shared'
  first = run_pair(workdir, {**RANDOM, 'max_steps': 4}, tmp_path / 'first', env=cache_env)
  assert '4 cpu device(s) in 2 process(es)' in first.stdout(0)
  second = run_pair(workdir, {**RANDOM, 'max_steps': STEPS}, tmp_path / 'second',
                    env=cache_env)
  assert 'resuming at step 4' in second.stdout(0)
  for pair in (first, second):
    # Only process 0 reports progress; both reach the same end.
    assert 'step ' not in pair.stdout(1) and 'eval at' not in pair.stdout(1)
    assert final_line(pair.stdout(0)) == final_line(pair.stdout(1)) != []

  one, two = train_losses(one_device_run), train_losses(workdir)
  records = read_jsonl(workdir / 'metrics.jsonl')
  assert [r['step'] for r in records if 'train/loss' in r] == [4, 8]  # one writer
  print('max |loss difference|:', max(abs(one[s] - two[s]) for s in one))
  np.testing.assert_allclose([two[s] for s in (4, 8)], [one[s] for s in (4, 8)],
                             rtol=1e-4)
  assert_same_model(one_device_run, workdir, STEPS)
  # Evaluation saw every test image once, split across the two hosts.
  final = json.loads((workdir / 'final_metrics.json').read_text())
  reference = json.loads((one_device_run / 'final_metrics.json').read_text())
  assert final['step'] == STEPS
  assert final['test/examples'] == TINY['dataset.test_subset']
  assert final['test/loss'] == pytest.approx(reference['test/loss'], rel=1e-4)


@pytest.mark.parametrize('victim,sig', [(1, signal.SIGKILL), (0, signal.SIGKILL),
                                        (1, signal.SIGSTOP)],
                         ids=['worker_dies', 'coordinator_dies', 'worker_hangs'])
def test_a_dead_peer_stops_the_other_quickly(victim, sig, tmp_path, cache_env):
  # Kill (or freeze: no socket closes, only the heartbeat can tell) one process
  # mid-run: the survivor must exit with a clear error within a bounded time,
  # not wait forever in a collective.
  heartbeat_s = 10
  # RANDOM: the same programs as the pair above, so they come from the cache.
  pair = Pair(tmp_path / 'w', {**RANDOM, 'num_epochs': 1000.0}, tmp_path,
              extra_args=[f'--heartbeat_timeout_s={heartbeat_s}'], env=cache_env)
  survivor = 1 - victim
  try:
    deadline = time.time() + PAIR_TIMEOUT_S
    while 'step 4/' not in pair.stdout(0):  # Training is under way on both.
      assert all(p.poll() is None for p in pair.procs), pair.stderr(0)[-3000:]
      assert time.time() < deadline, 'the pair never started training'
      time.sleep(0.5)
    killed_at = time.time()
    os.kill(pair.procs[victim].pid, sig)
    try:
      code = pair.procs[survivor].wait(timeout=90)
    except subprocess.TimeoutExpired:
      pytest.fail(f'the surviving process still runs 90 s after its peer got {sig.name}')
    took = time.time() - killed_at
  finally:
    pair.kill()
  print(f'process {survivor} exited with {code} {took:.1f} s after process {victim} '
        f'got {sig.name}')
  assert code != 0
  assert took < 3 * heartbeat_s + 30
  err = pair.stderr(survivor)
  # Ours (a collective failed) or JAX's (the heartbeat check fired first).
  assert ('If another process of this run died' in err
          or 'This most likely indicates that another task died' in err), err[-3000:]


def exit_times(pair, timeout):
  """Waits for every process of `pair`; returns when each exited (time.time())."""
  deadline, ended = time.time() + timeout, {}
  while len(ended) < len(pair.procs) and time.time() < deadline:
    for pid, p in enumerate(pair.procs):
      if pid not in ended and p.poll() is not None:
        ended[pid] = time.time()
    time.sleep(0.1)
  assert len(ended) == len(pair.procs), (
      f'only processes {sorted(ended)} exited within {timeout} s:\n' + '\n'.join(
          f'--- process {pid} stderr:\n{pair.stderr(pid)[-2000:]}' for pid in range(len(pair.procs))))
  return [ended[pid] for pid in range(len(pair.procs))]


def error_lines(text):
  return [l for l in text.splitlines() if l.startswith('error: ')]


@pytest.mark.parametrize('where', ['lock', 'writer'])
def test_an_error_of_process_0_alone_stops_every_process_with_its_message(
    where, tmp_path, cache_env):
  # Only process 0 takes the workdir lock and writes the metrics. An error
  # there must reach process 1, which is waiting in a collective: both exit
  # within 30 s, printing process 0's message, not after the 100 s heartbeat.
  workdir = tmp_path / 'w'
  if where == 'lock':  # A lock process 0 cannot read: it fails at start-up.
    (workdir / 'workdir.lock').mkdir(parents=True)
  pair = Pair(workdir, {**RANDOM, 'num_epochs': 1000.0}, tmp_path, env=cache_env)
  try:
    failed_at = None
    if where == 'writer':  # Mid-run, process 0's next metrics append fails.
      deadline = time.time() + PAIR_TIMEOUT_S
      while 'step 4/' not in pair.stdout(0):
        assert all(p.poll() is None for p in pair.procs), pair.stderr(0)[-3000:]
        assert time.time() < deadline, 'the pair never started training'
        time.sleep(0.2)
      (workdir / 'metrics.jsonl').unlink()
      (workdir / 'metrics.jsonl').mkdir()
      failed_at = time.time()
    ended = exit_times(pair, timeout=PAIR_TIMEOUT_S if failed_at is None else 90)
  finally:
    pair.kill()
  failed_at = failed_at or min(ended)  # The lock: from the first exit.
  print(f'{where}: processes exited {[round(t - failed_at, 1) for t in ended]} s after the '
        'failure')
  codes = [p.returncode for p in pair.procs]
  assert codes == [1, 1], [pair.stderr(pid)[-2000:] for pid in range(2)]
  assert max(ended) - failed_at < 30
  message = error_lines(pair.stderr(0))
  assert len(message) == 1 and 'IsADirectoryError' in message[0], pair.stderr(0)[-3000:]
  assert message[0].startswith('error: process 0 of 2 stopped')
  assert error_lines(pair.stderr(1)) == message, pair.stderr(1)[-3000:]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, cache_env):
  # A maintenance event may reach one host first. All processes must agree on
  # the step to stop at (JAX's preemption sync point), write one checkpoint
  # there together and exit cleanly, not leave the other in a collective.
  workdir = tmp_path / 'w'
  pair = Pair(workdir, {**RANDOM, 'num_epochs': 1000.0}, tmp_path, env=cache_env)
  try:
    deadline = time.time() + PAIR_TIMEOUT_S
    while 'step 4/' not in pair.stdout(0):
      assert all(p.poll() is None for p in pair.procs), pair.stderr(0)[-3000:]
      assert time.time() < deadline, 'the pair never started training'
      time.sleep(0.5)
    os.kill(pair.procs[1].pid, signal.SIGTERM)
    codes = pair.wait()
  finally:
    pair.kill()
  for pid in range(2):
    assert codes[pid] == 0, f'process {pid}:\n' + pair.stderr(pid)[-3000:]
  stopped = [[l for l in pair.stdout(pid).splitlines() if '(preempted)' in l]
             for pid in range(2)]
  assert len(stopped[0]) == 1 and stopped[0] == stopped[1], stopped
  step = int(stopped[0][0].split('stopped at step ')[1].split()[0])
  assert (workdir / 'checkpoints' / str(step)).is_dir()


PROBE = os.path.join(REPO, 'tests', 'multihost_probe.py')
# Only process 0 writes JAX's persistent compilation cache, so on a resume it
# loads the train step while its peers compile it; a peer more than 30 s late
# (a loaded CI box) trips Gloo's fixed connect timeout. Compiling everywhere
# keeps the processes in step.
NO_COMPILATION_CACHE = ['--compilation_cache_dir=']


def probe_reports(out, processes=2):
  return [json.loads(open(f'{out}.{pid}.json').read()) for pid in range(processes)]


@pytest.fixture(scope='module')
def probed_run(tmp_path_factory, cache_env):
  """A pair trains STEPS steps with the training split on device, probed
  (tests/multihost_probe.py): returns (workdir, each process's report)."""
  root = tmp_path_factory.mktemp('probed')
  out = root / 'probe'
  run_pair(root / 'w', {**RANDOM, 'max_steps': STEPS, 'dataset.on_device': True},
           root / 'logs', script=PROBE, env={**cache_env, 'NIN_PROBE_OUT': str(out)})
  return root / 'w', probe_reports(out)


def test_no_cross_host_equality_checks_in_the_loop_or_for_the_dataset(probed_run):
  # Host values device_put onto a multi-process mesh are all-gathered and
  # compared leaf by leaf (multihost_utils.assert_equal). The state and the
  # metric sums are made on device and the training split is placed by each
  # host for itself, so the step loop makes no such check, and the split
  # (TINY's 512 images) never crosses hosts.
  _, reports = probed_run
  for pid, report in enumerate(reports):
    checks = report['equality_checks']
    by_phase = {p: sum(c['phase'] == p for c in checks) for p in ('start-up', 'loop', 'end')}
    print(f'process {pid}: assert_equal calls by phase {by_phase}')
    assert by_phase['loop'] == 0, checks
    assert not [c for c in checks if any(s[:1] == [TINY['dataset.train_subset']]
                                         for s in c['shapes'])], checks
    # Start-up leaves nothing the size of the train state to compare either.
    assert by_phase['start-up'] <= 2, checks


def test_a_checkpoint_only_one_process_cannot_read_is_set_aside_by_both(
    probed_run, tmp_path):
  # Process 1 alone cannot read the newest checkpoint (step 8). Both processes
  # must learn it, set step 8 aside, restore step 4 and train on to step 8:
  # not a hang with one process at step 8 and the other at step 4.
  straight, _ = probed_run
  workdir = tmp_path / 'w'
  shutil.copytree(straight / 'checkpoints', workdir / 'checkpoints')
  out = tmp_path / 'probe'
  run_pair(workdir, {**RANDOM, 'max_steps': STEPS, 'dataset.on_device': True},
           tmp_path / 'logs', script=PROBE, timeout=240,
           extra_args=NO_COMPILATION_CACHE, env={'NIN_PROBE_OUT': str(out)},
           process_env={1: {'NIN_PROBE_UNREADABLE_STEP': str(STEPS)}})
  reports = probe_reports(out)
  assert [r['restored_step'] for r in reports] == [4, 4]
  assert (workdir / 'checkpoints' / f'{STEPS}.corrupt-0').is_dir()
  assert (workdir / 'checkpoints' / str(STEPS)).is_dir()  # Written again.
  assert_same_model(straight, workdir, STEPS)


def test_four_processes_stop_together_on_sigterm_and_resume_to_the_one_process_result(
    tmp_path):
  # The largest run a CI box can simulate: 4 processes × 2 CPU devices. One
  # process gets SIGTERM mid-run; all four must stop at the same step with a
  # checkpoint there, a new launch resumes from it, and the final model equals
  # a 1-process, 1-device run of the same global batches.
  workdir, t0 = tmp_path / 'w', time.time()
  os.makedirs(tmp_path / 'first')
  cluster = Pair(workdir, {**RANDOM, 'num_epochs': 1000.0}, tmp_path / 'first',
                 processes=4, extra_args=NO_COMPILATION_CACHE)
  try:
    deadline = time.time() + PAIR_TIMEOUT_S
    while 'step 4/' not in cluster.stdout(0):
      assert all(p.poll() is None for p in cluster.procs), cluster.stderr(0)[-3000:]
      assert time.time() < deadline, 'the processes never started training'
      time.sleep(0.5)
    os.kill(cluster.procs[2].pid, signal.SIGTERM)
    codes = cluster.wait()
  finally:
    cluster.kill()
  assert codes == [0] * 4, [cluster.stderr(pid)[-2000:] for pid in range(4)]
  stopped = [[l for l in cluster.stdout(pid).splitlines() if '(preempted)' in l]
             for pid in range(4)]
  assert len(stopped[0]) == 1 and all(s == stopped[0] for s in stopped), stopped
  stop = int(stopped[0][0].split('stopped at step ')[1].split()[0])
  assert (workdir / 'checkpoints' / str(stop)).is_dir()
  first_s = time.time() - t0

  end = stop + 4
  second = run_pair(workdir, {**RANDOM, 'max_steps': end}, tmp_path / 'second',
                    processes=4, extra_args=NO_COMPILATION_CACHE)
  assert f'resuming at step {stop}' in second.stdout(0)
  assert all(final_line(second.stdout(pid)) == final_line(second.stdout(0)) != []
             for pid in range(4))
  reference = tmp_path / 'one'
  proc = run_cli('fashion_mnist.py', reference, {**RANDOM, 'max_steps': end}, devices=1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  print(f'4 processes stopped together at step {stop} ({first_s:.0f} s), resumed to '
        f'step {end}; total {time.time() - t0:.0f} s')
  assert_same_model(reference, workdir, end)
