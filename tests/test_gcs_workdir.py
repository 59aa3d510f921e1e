"""A gs:// workdir works like a local one, against a local GCS server (tests/gcs_server.py).

Orbax's arrays reach the bucket through tensorstore's GCS driver, everything
else (metadata, metrics.jsonl, TensorBoard events, config.json,
final_metrics.json, curves.png, the set-aside of a damaged checkpoint) through
etils.epath and gcsfs. No file of the run is written locally.
"""

import json
import os
import signal

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
  assert run.kill() == -signal.SIGKILL
  assert 'run/checkpoints/4/_CHECKPOINT_METADATA' in gcs.objects(BUCKET)

  again = Run(workdir, {**RUN, 'write_plots': True}, logdir=tmp_path)
  assert again.finish() == 0, again.stderr[-3000:]
  assert 'resuming at step 4 of 16' in again.text
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


@pytest.mark.parametrize('script', ['sweep.py', 'ablation_head.py'])
def test_sweeps_and_ablations_refuse_a_bucket_workdir(script, tmp_path):
  proc = run_cli(script, f'gs://{BUCKET}/sweep', {}, extra_args=[
      f'--config={configs.path("fashion_mnist")}'])
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f'error: --workdir=gs://{BUCKET}/sweep: a ')
  assert not os.path.exists(os.path.join(REPO, 'gs:'))
