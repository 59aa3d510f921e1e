"""What made a run: the code's commit, the library versions and the devices.

Each launch record in launches.jsonl carries `current()`, so a number in a
results table can be traced to the code and the stack that printed it
(`python -m nin_jax.train.run_history WORKDIR` shows it).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

import jax

# The stack whose versions change results or speed; absent ones are left out.
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
            'ml_collections', 'tensorflow-cpu', 'tensorflow', 'tensorflow-datasets')

_SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))


def current() -> dict:
  """This process's code, Python, key library versions, backend and devices."""
  device = jax.devices()[0]
  return {
      'git': git_state(),
      'python': platform.python_version(),
      'packages': package_versions(),
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'process_count': jax.process_count(),
  }


def package_versions() -> dict[str, str]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def git_state(directory: str = _SOURCE_DIR) -> dict | None:
  """{'commit': sha, 'dirty': bool} of the checkout nin_jax runs from; None if none.

  'dirty' counts changes to tracked files (a workdir inside the clone is not a
  change to the code).
  """
  def git(*args: str) -> str:
    return subprocess.run(['git', '-C', directory, *args], capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()
  try:
    commit = git('rev-parse', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.SubprocessError):  # No git, or not a checkout (a wheel).
    return None
  return {'commit': commit, 'dirty': dirty}


def describe(record: dict) -> str:
  """One line: 'commit 1a2b3c4d (dirty) · Python 3.11.7 · jax 0.10.2 ... · 8 × TPU v4 in 2 processes'."""
  git = record.get('git')
  code = (f'commit {git["commit"][:10]}{" (dirty)" if git["dirty"] else ""}' if git
          else 'commit unknown (not run from a git checkout)')
  packages = ' '.join(f'{name} {version}' for name, version in record['packages'].items())
  processes = record['process_count']
  devices = (f'{record["device_count"]} × {record["device_kind"]} ({record["backend"]}) in '
             f'{processes} process{"es" if processes > 1 else ""}')
  return ' · '.join([code, f'Python {record["python"]}', packages, devices])
