"""docs/install.md's install blocks (Cloud TPU pod, GPU machine) run twice, as pasted.

Each block is read out of docs/install.md (as tests/test_slurm.py reads the batch
script) and run by bash in a fresh home directory, twice, against a local
clone of this repository standing in for GitHub. Only what this machine has
not is changed, each change asserted so the test breaks when the page does:
- `gcloud compute tpus tpu-vm ssh ... --command=CMD` runs CMD here, as the
  worker would (any other gcloud line would only be echoed);
- the accelerator extras ('.[tpu]', '.[cuda12]') become '.': libtpu and
  CUDA's libraries are no use on this CPU and are gigabytes;
- uv finds this machine's Python 3.12 on PATH and downloads no Python.
Between the two runs the branch moves on by one commit: the second run must
check it out (not stay on the first), and bring the venv up to date without an error.
"""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from readme_blocks import edited, readme_block

PAGE = 'docs/install.md'

PYTHON312 = shutil.which('python3.12') if sys.version_info[:2] == (3, 12) else None
PYTHON312 = PYTHON312 or next(iter(sorted(
    __import__('glob').glob(os.path.expanduser('~/.pyenv/versions/3.12.*/bin/python3.12')))), None)
pytestmark = pytest.mark.skipif(PYTHON312 is None, reason='needs a Python 3.12 interpreter')

# Runs the page's `gcloud compute tpus tpu-vm ssh --command=...` on this
# machine, as the one worker; any other gcloud command is only echoed.
FAKE_GCLOUD = '''gcloud() {
  local arg
  for arg in "$@"; do
    case $arg in --command=*) bash -c "${arg#--command=}"; return ;; esac
  done
  echo "skipped: gcloud $*"
}
'''


@pytest.fixture
def remote(tmp_path):
  """A bare clone of this repository's HEAD, its branch `recipe` standing in
  for the GitHub repository; returns (url, a function adding one commit)."""
  url = tmp_path / 'remote.git'
  git = lambda *args, **kw: subprocess.run(['git', *args], check=True, capture_output=True,
                                          text=True, **kw).stdout.strip()
  git('clone', '-q', '--bare', REPO, str(url))
  git('--git-dir', str(url), 'branch', '-f', 'recipe', git('-C', REPO, 'rev-parse', 'HEAD'))

  def add_commit() -> str:
    head = git('--git-dir', str(url), 'rev-parse', 'recipe')
    new = git('--git-dir', str(url), 'commit-tree', f'{head}^{{tree}}', '-p', head, '-m', 'next',
              env={**os.environ, 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t',
                   'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'})
    git('--git-dir', str(url), 'update-ref', 'refs/heads/recipe', new)
    return new
  return str(url), add_commit, lambda: git('--git-dir', str(url), 'rev-parse', 'recipe')


def run_twice(script: str, tmp_path, remote):
  """Runs `script` twice in one fresh home; the branch moves on in between."""
  url, add_commit, branch_head = remote
  home, bin_dir = tmp_path / 'home', tmp_path / 'bin'
  home.mkdir()
  bin_dir.mkdir()
  for name in ('python3', 'python3.12'):  # The machine's Python, as the image's python3.
    os.symlink(PYTHON312, bin_dir / name)
  env = {**{k: v for k, v in os.environ.items() if not k.startswith(('VIRTUAL_ENV', 'UV_'))},
         'HOME': str(home), 'PATH': f'{bin_dir}:{os.environ["PATH"]}',
         'UV_PYTHON_DOWNLOADS': 'never',
         'UV_CACHE_DIR': os.path.expanduser('~/.cache/uv')}  # The real home's: warm.
  script = f'set -euo pipefail\n{FAKE_GCLOUD}REPO={url} REF=recipe TPU=nin-pod ZONE=z\n{script}'
  outputs = []
  for attempt in (1, 2):
    expected = branch_head() if attempt == 1 else add_commit()  # The branch moves on.
    proc = subprocess.run(['bash', '-c', script], cwd=home, env=env, capture_output=True,
                          text=True, timeout=900)
    print(f'--- run {attempt}: exit {proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-3000:]}')
    assert proc.returncode == 0, f'run {attempt} failed:\n{proc.stderr[-3000:]}'
    head = subprocess.run(['git', '-C', str(home / 'nin_jax'), 'rev-parse', 'HEAD'],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert head == expected, f'run {attempt} left the clone at {head}, not {expected}'
    assert proc.stdout.strip().splitlines()[-1].endswith(' cpu'), proc.stdout  # jax imports.
    outputs.append(proc.stdout)
  assert os.path.exists(home / '.nin-uv' / 'bin' / 'uv')
  return outputs


def test_the_tpu_pod_install_runs_twice(tmp_path, remote):
  block = readme_block('tpu-vm ssh', "-e '.[tpu]'", page=PAGE)
  run_twice(edited(block, [("-e '.[tpu]'", "-e '.'")]), tmp_path, remote)


def test_the_gpu_install_runs_twice(tmp_path, remote):
  block = readme_block('REF=main', "-e '.[cuda12]'", page=PAGE)
  run_twice(edited(block, [
      ("-e '.[cuda12]'", "-e '.'"),
      ('REPO=https://github.com/<you>/nin_jax.git REF=main', '# REPO, REF: the test\'s'),
  ]), tmp_path, remote)
