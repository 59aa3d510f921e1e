"""Each launch records what made it: the commit, the versions, the devices."""

import subprocess
import sys

import jax

from conftest import REPO, TINY, run_cli
from nin_jax.runtime import provenance
from nin_jax.train import run_history


def test_a_launch_records_its_commit_versions_and_devices_and_run_history_prints_them(tmp_path):
  workdir = tmp_path / 'run'
  result = run_cli('fashion_mnist.py', workdir, {**TINY, 'max_steps': 2}, devices=2)
  assert result.returncode == 0, result.stderr[-3000:]

  record = run_history.launches(str(workdir))[-1]['provenance']
  head = subprocess.run(['git', '-C', REPO, 'rev-parse', 'HEAD'], capture_output=True,
                        text=True, check=True).stdout.strip()
  assert record['git']['commit'] == head and isinstance(record['git']['dirty'], bool)
  assert record['python'] == '.'.join(map(str, sys.version_info[:3]))
  assert record['packages']['jax'] == jax.__version__
  assert {'jaxlib', 'flax', 'optax', 'orbax-checkpoint'} <= set(record['packages'])
  assert (record['backend'], record['device_kind']) == ('cpu', 'cpu')
  assert (record['device_count'], record['process_count']) == (2, 1)

  listing = subprocess.run([sys.executable, '-m', 'nin_jax.train.run_history', str(workdir)],
                           capture_output=True, text=True, check=True, cwd=REPO).stdout
  assert provenance.describe(record) in listing
  assert f'commit {head[:10]}' in listing and '2 × cpu (cpu) in 1 process' in listing


def test_outside_a_git_checkout_the_commit_is_unknown(tmp_path):
  assert provenance.git_state(str(tmp_path)) is None
