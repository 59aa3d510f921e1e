"""A gs:// workdir works like a local one, against a local GCS server (tests/gcs_server.py).

Orbax's arrays reach the bucket through tensorstore's GCS driver, everything
else (metadata, metrics.jsonl, TensorBoard events, config.json,
final_metrics.json, curves.png, the set-aside of a damaged checkpoint) through
etils.epath and gcsfs; the workdir lock is an object guarded by generation
preconditions (through gcsfs). Sweeps and the ablation keep every trial,
its log and their reports in the bucket. No file of a run is written locally.
"""

import json
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest
from etils import epath

from conftest import REPO, TINY, run_cli
from gcs_server import GcsServer
from nin_jax import configs
from test_multihost import run_pair
from test_reliability import RUN, Run, assert_same_state, comparable_records, reference  # noqa: F401

BUCKET = 'nin-test'


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The server, a bucket, and this process and its children pointed at both."""
  server = GcsServer(tmp_path_factory.mktemp('gcs') / 'server.log')
  saved = {k: os.environ.get(k) for k in server.env}
  os.environ.update(server.env)
  server.create_bucket(BUCKET)
  yield server
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


def test_kill_resume_and_damaged_checkpoint_in_a_bucket(gcs, reference, tmp_path):
  workdir = f'gs://{BUCKET}/run'
  command = {**RUN, 'write_plots': True, 'testing.pause_at_steps': '(6,)'}
  run = Run(workdir, command, logdir=tmp_path)
  assert run.wait_for_pause() == 6  # The step-4 checkpoint is complete in the bucket.
  second = run_cli('fashion_mnist.py', workdir, RUN)  # One writer per workdir, in a bucket too.
  assert second.returncode == 2, second.stderr[-3000:]
  assert (f'error: workdir {workdir} is in use by another run: pid {run.proc.pid} on '
          f'{socket.gethostname()}, started ') in second.stderr
  assert run.kill() == -signal.SIGKILL
  assert 'run/workdir.lock' in gcs.objects(BUCKET)  # A killed run's lock stays behind.
  assert 'run/checkpoints/4/_CHECKPOINT_METADATA' in gcs.objects(BUCKET)

  again = Run(workdir, {**RUN, 'write_plots': True}, logdir=tmp_path)
  assert again.finish() == 0, again.stderr[-3000:]
  assert 'resuming at step 4 of 16' in again.text
  assert f'process {run.proc.pid} no longer exists' in again.stderr  # Its lock taken over.
  assert f'workdir {workdir}' in again.text
  assert_same_state(reference, workdir, 16)
  final = lambda w: json.loads((epath.Path(w) / 'final_metrics.json').read_text())
  assert final(workdir) == final(reference)
  assert comparable_records(workdir) == comparable_records(reference)

  # Every output is an object in the bucket (and nothing landed locally).
  objects = gcs.objects(BUCKET, 'run/')
  print(f'{len(objects)} objects, e.g.', objects[:3], '...')
  top = {name.split('/')[1] for name in objects}
  assert top == {'checkpoints', 'tensorboard', 'metrics.jsonl', 'config.json',
                 'final_metrics.json', 'curves.png', 'inference', 'launches.jsonl'}
  assert {name.split('/')[2] for name in objects if '/checkpoints/' in name} == {
      '8', '12', '16'}
  assert [n for n in objects if '/tensorboard/events.out.tfevents.' in n]
  assert not os.path.exists('gs:') and not os.path.exists(os.path.join(tmp_path, 'gs:'))

  # Damage the newest checkpoint's arrays: the run sets it aside in the bucket
  # and resumes from step 12, ending where the reference ended.
  for name in objects:
    if name.startswith('run/checkpoints/16/default/d/'):
      (epath.Path(f'gs://{BUCKET}') / name).write_bytes(b'garbage')
  third = Run(workdir, RUN, logdir=tmp_path)
  assert third.finish() == 0, third.stderr[-3000:]
  assert 'resuming at step 12 of 16' in third.text
  assert 'checkpoint at step 16 cannot be read' in third.stderr
  names = gcs.objects(BUCKET, 'run/checkpoints/')
  assert any(n.startswith('run/checkpoints/16.corrupt-0/') for n in names)
  assert_same_state(reference, workdir, 16)
  assert comparable_records(workdir) == comparable_records(reference)


def test_two_processes_share_a_bucket_workdir(gcs, tmp_path):
  workdir = f'gs://{BUCKET}/pair'
  pair = run_pair(workdir, {**TINY, 'max_steps': 4}, tmp_path / 'logs')
  assert '4 cpu device(s) in 2 process(es)' in pair.stdout(0)
  finals = [[l for l in pair.stdout(p).splitlines() if l.startswith('final test accuracy')]
            for p in (0, 1)]
  assert finals[0] == finals[1] != []
  objects = gcs.objects(BUCKET, 'pair/')
  # Both processes wrote their shards of the step-4 checkpoint.
  assert 'pair/checkpoints/4/_CHECKPOINT_METADATA' in objects
  assert {n.split('/')[-1] for n in objects if '/array_metadatas/' in n} == {
      'process_0', 'process_1'}
  records = [json.loads(l) for l in
             (epath.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if 'train/loss' in r] == [4]  # One writer.
  loaded = json.loads((epath.Path(workdir) / 'final_metrics.json').read_text())
  assert loaded['step'] == 4 and loaded['test/examples'] == TINY['dataset.test_subset']
  assert np.isfinite(loaded['test/loss'])


def test_sweep_and_ablation_run_report_and_resume_in_a_bucket(gcs, tmp_path):
  base = [f'--config.{k}={v}' for k, v in {**TINY, 'max_steps': 2}.items()]
  sweep_config = tmp_path / 'two_rates.py'
  sweep_config.write_text(
      'from nin_jax import sweeps\nfrom nin_jax.configs.fashion_mnist import get_config\n\n'
      "def sweep():\n  return sweeps.grid(**{'optim.learning_rate': (0.02, 0.05)})\n")
  sweep = run_cli('sweep.py', f'gs://{BUCKET}/sweep', {},
                  extra_args=[f'--config={sweep_config}', *base])
  assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
  ablation = run_cli('ablation_head.py', f'gs://{BUCKET}/ablation', {},
                     extra_args=[f'--config={configs.path("fashion_mnist")}', *base])
  assert ablation.returncode == 0, ablation.stdout[-3000:] + ablation.stderr[-3000:]
  print(ablation.stdout)

  sweep_objects = gcs.objects(BUCKET, 'sweep/')
  trial_names = ['trial_000_lr=0.02', 'trial_001_lr=0.05']
  for name in trial_names:
    for f in ('overrides.json', 'status.json', 'train.log', 'final_metrics.json',
              'metrics.jsonl', 'checkpoints/2/_CHECKPOINT_METADATA'):
      assert f'sweep/{name}/{f}' in sweep_objects
  assert {'sweep/results.md', 'sweep/results.csv', 'sweep/results.png'} <= set(sweep_objects)
  assert '| 1 | trial_0' in (epath.Path(f'gs://{BUCKET}/sweep') / 'results.md').read_text()
  log = (epath.Path(f'gs://{BUCKET}/sweep') / trial_names[0] / 'train.log').read_text()
  assert 'final test accuracy' in log  # The trial's whole output reached the bucket.

  ablation_objects = set(gcs.objects(BUCKET, 'ablation/'))
  for variant in ('gap', 'fc', 'fc_dropout'):
    assert f'ablation/{variant}/final_metrics.json' in ablation_objects
    assert f'ablation/{variant}/train.log' in ablation_objects
  assert {f'ablation/{f}' for f in (
      'ablation.md', 'ablation.csv', 'ablation_trials.md', 'ablation_trials.csv',
      'ablation_curves.png', 'ablation_errors.png')} <= ablation_objects
  assert '| mlpconv + GAP | 1/1 |' in (
      epath.Path(f'gs://{BUCKET}/ablation') / 'ablation.md').read_text()
  assert not os.path.exists(os.path.join(REPO, 'gs:'))

  # Rerun: every finished trial is found in the bucket and skipped.
  again = run_cli('ablation_head.py', f'gs://{BUCKET}/ablation', {},
                  extra_args=[f'--config={configs.path("fashion_mnist")}', *base])
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  assert again.stdout.count('finished before, skipped') == 3


def test_two_runs_taking_over_a_dead_runs_bucket_lock_cannot_both_win(gcs):
  from nin_jax import workdir_lock
  workdir = f'gs://{BUCKET}/locked'
  stale = {'host': 'preempted-host', 'pid': 4242, 'started_utc': '2026-01-01 00:00:00 UTC',
           'token': 'theirs', 'heartbeat': time.time() - 2 * workdir_lock.STALE_AFTER_S}
  (epath.Path(workdir) / workdir_lock.LOCK_FILE).write_text(json.dumps(stale))
  locks = [workdir_lock.WorkdirLock(workdir) for _ in range(2)]
  outcomes = [None, None]

  def take(i):
    try:
      locks[i].acquire()
      outcomes[i] = 'won'
    except workdir_lock.WorkdirLockedError:
      outcomes[i] = 'refused'
  threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(outcomes) == ['refused', 'won']
  winner = locks[outcomes.index('won')]
  holder, version = winner._store.read()
  assert holder['token'] == winner._record['token']
  # A holder that stalled past a takeover cannot overwrite the new holder's lock.
  winner._store.replace(winner._payload(), version)
  with pytest.raises(OSError, match='lock changed under this run'):
    winner._store.replace(winner._payload(), version)
  winner.release()
  assert gcs.objects(BUCKET, 'locked/') == []


def test_an_unreadable_bucket_lock_goes_stale_by_the_objects_own_time(gcs):
  from nin_jax import workdir_lock
  workdir = f'gs://{BUCKET}/damaged-lock'
  (epath.Path(workdir) / workdir_lock.LOCK_FILE).write_text('not a lock')
  with pytest.raises(workdir_lock.WorkdirLockedError, match='is unreadable'):
    workdir_lock.WorkdirLock(workdir, stale_after_s=30).acquire()
  time.sleep(3)  # Last-Modified has whole seconds.
  lock = workdir_lock.WorkdirLock(workdir, stale_after_s=1)
  lock.acquire()
  assert json.loads((epath.Path(workdir) / workdir_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
  lock.release()
  assert gcs.objects(BUCKET, 'damaged-lock/') == []


def test_an_unsupported_url_scheme_is_refused_not_made_a_local_directory(tmp_path):
  proc = run_cli('fashion_mnist.py', 's3://nin-test/run', TINY)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: workdir s3://nin-test/run: s3:// is not supported; use a local path or '
      'gs://BUCKET/...')
  assert not os.path.exists(os.path.join(REPO, 's3:'))
