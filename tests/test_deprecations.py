"""A deprecation in jax, flax, optax or orbax fails the test that meets it
(pyproject's filterwarnings), on both CI lanes, so an API move shows in CI."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.core

# Tests that each meet one warning (flax's, optax's and orbax's stand-ins are
# attributed to a module of theirs), run by pytest under this repo's pyproject.
TINY_TESTS = '''
import warnings

import pytest


def test_jax_deprecation_raised_inside_jax():
  import jax
  # Deprecated in jax 0.10 through 0.12; attributed to jax._src.nn.functions.
  jax.nn.one_hot(jax.numpy.array([0.0, 1.0]), 3)


def test_jax_deprecation_attributed_to_our_line():
  import jax
  # Deprecated in jax 0.10 through 0.12; jax warns with stacklevel=2, so the
  # warning is attributed to this module (the caller), not to jax.
  jax.numpy.astype(jax.numpy.array([1 + 1j]), jax.numpy.float32)


@pytest.mark.parametrize('module', ['flax.nnx.module', 'optax._src.alias',
                                    'orbax.checkpoint.checkpointer'])
@pytest.mark.parametrize('category', [DeprecationWarning, FutureWarning])
def test_raised_inside_the_library(module, category):
  warnings.warn_explicit('old API', category, 'lib.py', 1, module=module)


def test_other_libraries_deprecations_are_not_ours_to_fail_on():
  warnings.warn_explicit('old API', DeprecationWarning, 'lib.py', 1, module='matplotlib.cm')


SINGLE_DEVICE = 'jax.sharding.SingleDeviceSharding is deprecated; use make_single_device_sharding'


def test_orbax_naming_single_device_sharding_is_not_ours_to_fail_on():
  warnings.warn_explicit(SINGLE_DEVICE, DeprecationWarning, 'colocated_transport.py', 225,
                         module='orbax.checkpoint._src.multihost.colocated_transport')


def test_our_line_naming_single_device_sharding_fails():
  warnings.warn_explicit(SINGLE_DEVICE, DeprecationWarning, 'checkpoint.py', 1,
                         module='nin_jax.runtime.checkpoint')
'''


def test_deprecation_warnings_from_the_jax_stack_are_errors(tmp_path):
  (tmp_path / 'test_tiny.py').write_text(TINY_TESTS)
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-rA',
       '-c', os.path.join(REPO, 'pyproject.toml'), '--rootdir', str(tmp_path),
       str(tmp_path / 'test_tiny.py')],
      capture_output=True, text=True, timeout=300, cwd=tmp_path,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  outcomes = dict((name, state) for state, name in re.findall(
      r'^(PASSED|FAILED) test_tiny\.py::(\S+)', proc.stdout, re.M))
  assert len(outcomes) == 11, proc.stdout[-3000:]
  failed = sorted(name for name, state in outcomes.items() if state == 'FAILED')
  assert failed == sorted(name for name in outcomes if 'not_ours' not in name), proc.stdout
  # The two real jax warnings (if jax removes either API, pick another deprecated one).
  assert 'DeprecationWarning: jax.nn.one_hot input should be integer-typed' in proc.stdout
  assert 'DeprecationWarning: Casting from complex to real dtypes' in proc.stdout
