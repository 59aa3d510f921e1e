"""What a process gets from nin_jax: nothing on import, everything from configure_process().

Also: TensorFlow only where TFDS data is read, and the private jax APIs still in use.
"""

import ast
import os
import pathlib
import subprocess
import sys
import types

import pytest

from conftest import REPO, run_cli
from nin_jax.runtime import process_setup
from nin_jax.runtime import tensorflow_loader


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
  clean = {k: v for k, v in os.environ.items()
           if k not in ('TF_CPP_MIN_LOG_LEVEL', 'XLA_FLAGS', 'EPATH_USE_TF',
                        'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT')}
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        env={**clean, 'PYTHONPATH': REPO, **env}, timeout=300)


def test_importing_nin_jax_leaves_the_environment_and_fsspec_as_they_were():
  code = '''
import json, os, pkgutil, importlib
# What the libraries themselves set on import (jax: TF_CPP_MIN_LOG_LEVEL and
# TPU_SKIP_MDS_QUERY) is theirs; only nin_jax's own changes count.
import fsspec.config, jax, flax.nnx, optax, orbax.checkpoint, etils.epath, matplotlib
environ, fsspec_conf = dict(os.environ), json.dumps(fsspec.config.conf, sort_keys=True)
import nin_jax
modules = [m.name for m in pkgutil.walk_packages(nin_jax.__path__, 'nin_jax.')
           if m.name != 'nin_jax.research.torch_nin']  # torch is the test extra's, not a user's
for name in modules:
  importlib.import_module(name)
changed = sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k))
assert not changed, changed
assert json.dumps(fsspec.config.conf, sort_keys=True) == fsspec_conf, fsspec.config.conf
print(len(modules))
'''
  result = _run_python(code)
  assert result.returncode == 0, result.stderr[-3000:]
  assert int(result.stdout) > 30  # every module was imported


def test_configure_process_applies_what_its_docstring_says():
  environ = {'TF_CPP_MIN_LOG_LEVEL': ''}  # set but empty counts as unset
  process_setup.configure(environ)
  assert environ['TF_CPP_MIN_LOG_LEVEL'] == '1'
  assert '--xla_cpu_experimental_ynn_fusion_type=reduce' in environ['XLA_FLAGS']
  assert environ['EPATH_USE_TF'] == 'false'
  user = {'TF_CPP_MIN_LOG_LEVEL': '0', 'EPATH_USE_TF': 'true'}  # the user's values win
  process_setup.configure(user)
  assert user['TF_CPP_MIN_LOG_LEVEL'] == '0' and user['EPATH_USE_TF'] == 'true'


def test_configure_process_after_jax_started_warns_that_its_flags_may_not_apply():
  code = ('import jax; jax.devices()\n'
          'import warnings, nin_jax\n'
          'with warnings.catch_warnings(record=True) as w:\n'
          '  warnings.simplefilter("always"); nin_jax.configure_process()\n'
          'print(w[0].message if w else "no warning")')
  result = _run_python(code)
  assert 'already started its backends' in result.stdout, result.stdout + result.stderr


def test_without_the_private_jax_api_backends_started_is_unknown(monkeypatch):
  import jax._src  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax._src, 'xla_bridge', types.ModuleType('moved'))  # as if jax moved it
  assert process_setup.jax_backends_started() is None


def test_without_the_private_jax_api_no_error_is_posted_to_other_processes(monkeypatch):
  import jax._src  # pylint: disable=g-import-not-at-top
  from nin_jax.runtime import host_errors  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax._src, 'distributed', types.ModuleType('moved'))  # as if jax moved it
  assert host_errors._client() is None
  host_errors.watch()  # Starts nothing, raises nothing.


# Every private jax API nin_jax still uses, and why each is safe when jax moves it.
PRIVATE_JAX_APIS = {
    # process_setup.jax_backends_started: unknown (None) if gone, then a warning.
    ('nin_jax/runtime/process_setup.py', 'jax._src.xla_bridge'),
    # host_errors._client: jax's key-value store; if gone, an error of one
    # process stops the others only at their next collective, as before.
    ('nin_jax/runtime/host_errors.py', 'jax._src.distributed'),
}


def test_the_private_jax_apis_in_use_are_the_listed_ones():
  found = set()
  for root in ('nin_jax', 'experiments', 'benchmarks'):
    for path in sorted(pathlib.Path(REPO, root).rglob('*.py')):
      for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module or ''] if isinstance(node, ast.ImportFrom) else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
          if name.startswith('jax._src'):
            module = name if isinstance(node, ast.Import) else (
                f'{name}.{node.names[0].name}' if name == 'jax._src' else name)
            found.add((str(path.relative_to(REPO)), module))
  assert found == PRIVATE_JAX_APIS


def test_the_tfds_path_without_the_extra_is_one_line_naming_the_install(tmp_path):
  """Where tensorflow-datasets is not installed (a base `pip install nin_jax`)."""
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(  # None in sys.modules: the import fails
      'import sys\nsys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None\n')
  result = run_cli('fashion_mnist.py', tmp_path / 'run',
                   {'dataset.source': 'tfds', 'model.width_multiplier': 0.125},
                   env={'PYTHONPATH': f'{site}{os.pathsep}{REPO}'})
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [
      'error: reading TFDS data needs TensorFlow Datasets, which is not installed '
      "(tensorflow is missing); install it with pip install 'nin_jax[tfds]'"]


def test_tensorflow_start_up_info_lines_are_dropped_and_everything_else_kept(capfd):
  with tensorflow_loader._start_up_noise_filtered():  # pylint: disable=protected-access
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called '
                b'are written to STDERR\n'
                b'I0000 00:00:1796005296.006162   11150 port.cc:153] oneDNN custom '
                b'operations are on.\n'
                b'W1130 02:21:38.223712 140588964617088 file_utils.py:394] kept\n'
                b'E0000 00:00:1796005296.006162   11150 something.cc:1] kept too\n')
  assert capfd.readouterr().err.splitlines() == [
      'W1130 02:21:38.223712 140588964617088 file_utils.py:394] kept',
      'E0000 00:00:1796005296.006162   11150 something.cc:1] kept too']
