"""A gs:// workdir works like a local one, against a local GCS server (tests/gcs_server.py).

Orbax's arrays reach the bucket through tensorstore's GCS driver, everything
else (metadata, metrics.jsonl, TensorBoard events, config.json,
final_metrics.json, curves.png, the set-aside of a damaged checkpoint) through
etils.epath and gcsfs; the workdir lock is an object guarded by generation
preconditions (through gcsfs). Sweeps and the ablation keep every trial,
its log and their reports in the bucket. No file of a run is written locally.

Through `GcsProxy` the server gets IAM's rule (a denied permission answers
403) and counts what reaches each object: a bucket that lacks a permission, or
cannot be reached, is one line at start-up, and appended files reach the
bucket at its pace.
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

from conftest import REPO, TINY, read_jsonl, run_cli
from gcs_server import GcsProxy, GcsServer
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


@pytest.fixture
def proxy(gcs):
  """The server behind IAM's one rule: add permissions to `proxy.denied` to refuse them."""
  proxy = GcsProxy(gcs)
  yield proxy
  proxy.stop()


@pytest.mark.core
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
      'from nin_jax.research import sweeps\nfrom nin_jax.configs.fashion_mnist import get_config\n\n'
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
  from nin_jax.runtime import workdir_lock
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
  from nin_jax.runtime import workdir_lock
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


def _one_error_line(proc, within_s=None, started=None):
  """The run's only stderr line, after checking it is an `error:` with exit status 2."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith('error: ')
  if within_s is not None:
    assert time.time() - started < within_s
  return lines[0]


def test_a_bucket_that_refuses_get_bucket_is_one_line_with_the_grant(gcs, proxy):
  # roles/storage.objectAdmin alone: Orbax's get_bucket() (storage.buckets.get)
  # would fail the first resume, or the first deletion of an old checkpoint.
  proxy.denied = {'storage.buckets.get'}
  proc = run_cli('fashion_mnist.py', f'gs://{BUCKET}/no-get-bucket', TINY, env=proxy.env)
  print(proc.stderr)
  assert _one_error_line(proc) == (
      f'error: gs://{BUCKET}/no-get-bucket: nin-test@example.iam.gserviceaccount.com lacks '
      f'storage.buckets.get on bucket gs://{BUCKET} (Orbax reads the bucket to list and to '
      'delete checkpoints). Grant it with: gcloud storage buckets add-iam-policy-binding '
      f'gs://{BUCKET} --member=serviceAccount:nin-test@example.iam.gserviceaccount.com '
      '--role=roles/storage.legacyBucketReader')
  assert gcs.objects(BUCKET, 'no-get-bucket/') == []  # Refused before anything was written.


@pytest.mark.parametrize('permission, role', [
    ('storage.objects.list', 'roles/storage.objectAdmin'),
    ('storage.objects.create', 'roles/storage.objectAdmin'),
    ('storage.objects.get', 'roles/storage.objectAdmin'),
    ('storage.objects.delete', 'roles/storage.objectAdmin')])
def test_each_permission_a_run_uses_is_checked_at_start_up(gcs, proxy, monkeypatch,
                                                            permission, role):
  from nin_jax.runtime import bucket_access
  for key, value in proxy.env.items():
    monkeypatch.setenv(key, value)
  workdir = f'gs://{BUCKET}/denied-{permission.rsplit(".", 1)[1]}'
  proxy.denied = {permission}
  with pytest.raises(bucket_access.BucketAccessError) as refused:
    bucket_access.check(workdir)
  print(refused.value)
  assert str(refused.value).startswith(f'{workdir}: nin-test@example.iam.gserviceaccount.com '
                                       f'lacks {permission} on bucket gs://{BUCKET} (')
  assert str(refused.value).endswith(
      f'Grant it with: gcloud storage buckets add-iam-policy-binding gs://{BUCKET} '
      f'--member=serviceAccount:nin-test@example.iam.gserviceaccount.com --role={role}')
  proxy.denied = set()
  bucket_access.check(workdir)  # Granted: the same check passes...
  # ...and its probe object is gone, unless deleting was what was refused.
  assert len(gcs.objects(BUCKET, workdir.split('/')[-1] + '/')) == (
      permission == 'storage.objects.delete')


def _service_account_key(path, token_uri):
  """A service-account key file whose token endpoint is `token_uri`."""
  from cryptography.hazmat.primitives import serialization
  from cryptography.hazmat.primitives.asymmetric import rsa
  key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
      serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
      serialization.NoEncryption()).decode()
  path.write_text(json.dumps({
      'type': 'service_account', 'project_id': 'test', 'private_key_id': '1',
      'private_key': key, 'client_email': 'trainer@test.iam.gserviceaccount.com',
      'client_id': '1', 'token_uri': token_uri}))
  return str(path)


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('case', ['no credentials', 'no network', 'server refuses',
                                  'server never answers', 'no such bucket'])
def test_a_bucket_that_cannot_be_used_is_one_line_within_15_s(gcs, tmp_path, case):
  # Without the emulator: Google's endpoints, and no credentials anywhere
  # (no key file, no gcloud login in this HOME, not a Compute Engine VM).
  real_gcs = {'STORAGE_EMULATOR_HOST': '', 'TENSORSTORE_GCS_HTTP_URL': '',
              'HOME': str(tmp_path), 'CLOUDSDK_CONFIG': str(tmp_path / 'gcloud'),
              'NO_GCE_CHECK': 'true'}
  bucket, env, expected = BUCKET, {}, ''
  if case == 'no credentials':
    env = real_gcs
    expected = (f'no Google Cloud credentials found to reach bucket gs://{BUCKET}. Run '
                '`gcloud auth application-default login`, or set '
                'GOOGLE_APPLICATION_CREDENTIALS to a key file, or run on a VM whose '
                'service account may use the bucket')
  elif case == 'no network':  # What a machine without network sees: names do not resolve.
    key = _service_account_key(tmp_path / 'key.json', 'https://oauth2.invalid/token')
    env = {**real_gcs, 'GOOGLE_APPLICATION_CREDENTIALS': key}
    expected = (f'cannot reach oauth2.invalid:443 for bucket gs://{BUCKET}: its name does '
                'not resolve. No network, or a proxy or firewall in the way?')
  elif case == 'server refuses':
    port = _closed_port()
    env = {'STORAGE_EMULATOR_HOST': f'http://127.0.0.1:{port}'}
    expected = (f'cannot reach 127.0.0.1:{port} for bucket gs://{BUCKET}: the connection '
                'was refused. No network, or a proxy or firewall in the way?')
  elif case == 'server never answers':  # Connected, then silence (a dropping firewall).
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    env = {'STORAGE_EMULATOR_HOST': f'http://127.0.0.1:{port}'}
    expected = (f'cannot reach 127.0.0.1:{port} for bucket gs://{BUCKET}: the connection '
                'timed out. No network, or a proxy or firewall in the way?')
  else:
    bucket = 'no-such-bucket'
    expected = ('bucket gs://no-such-bucket does not exist. Create it with `gcloud storage '
                'buckets create gs://no-such-bucket --location=REGION`, or correct --workdir')
  started = time.time()
  proc = run_cli('fashion_mnist.py', f'gs://{bucket}/run', TINY, env=env)
  print(f'{case}: {time.time() - started:.1f} s: {proc.stderr.strip()}')
  assert _one_error_line(proc, within_s=15, started=started) == (
      f'error: gs://{bucket}/run: {expected}')


def test_appended_files_reach_the_bucket_at_its_pace(gcs, proxy):
  # 200 steps, a record each, a checkpoint every 25: metrics.jsonl and the
  # TensorBoard events go up at most every 10 s (the one at the end at least
  # 1 s after the one before), and only their new bytes.
  workdir = f'gs://{BUCKET}/paced'
  overrides = {**TINY, 'num_epochs': 25.0, 'log_every_steps': 1,
               'checkpoint_every_steps': 25}
  proxy.latency_s = 0.05  # A real bucket's distance: the run spans several uploads.
  started = time.time()
  proc = run_cli('fashion_mnist.py', workdir, overrides, env=proxy.env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'final test accuracy' in proc.stdout
  records = [r for r in read_jsonl(f'{workdir}/metrics.jsonl') if 'train/loss' in r]
  assert [r['step'] for r in records] == list(range(1, 201))
  (events,) = [n for n in gcs.objects(BUCKET, 'paced/tensorboard/') if 'tfevents' in n]
  sizes = {name: len((epath.Path(f'gs://{BUCKET}') / name).read_bytes())
           for name in ('paced/metrics.jsonl', events)}
  print(f'200 steps in {time.time() - started:.0f} s')
  for name, size in sizes.items():
    times, sent = proxy.write_times(name), proxy.bytes_into(name)
    gaps = np.diff(times)
    print(f'{name}: {len(times)} writes, gaps {np.round(gaps, 1).tolist()} s; '
          f'{sent} bytes sent for {size} bytes ({sent / size:.2f}x)')
    assert len(times) >= 2
    assert all(gaps[:-1] >= 10) and gaps[-1] >= 1
    assert sent <= 3 * size
  # The composed event file reads back whole: one train/loss per step.
  from tensorboard.compat.proto import event_pb2

  from nin_jax.runtime import rewind
  payloads, cut_short = rewind._records(
      (epath.Path(f'gs://{BUCKET}') / events).read_bytes())
  assert not cut_short
  losses = [e.step for e in map(event_pb2.Event.FromString, payloads)
            if any(v.tag == 'train/loss' for v in e.summary.value)]
  assert losses == list(range(1, 201))
