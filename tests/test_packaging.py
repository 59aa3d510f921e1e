"""nin_jax is a real package: metadata, extras, console scripts, shipped configs, no sys.path edits."""

import glob
import importlib
import os
import re

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from setuptools.config.pyprojecttoml import read_configuration

from conftest import REPO
from nin_jax import configs

pytestmark = pytest.mark.core


def project():
  return read_configuration(os.path.join(REPO, 'pyproject.toml'), expand=True)['project']


def test_dependencies_and_extras_tensorflow_only_in_tfds():
  p = project()
  names = {re.split(r'[\[<>=]', d)[0] for d in p['dependencies']}
  assert {'jax', 'flax', 'orbax-checkpoint', 'etils', 'gcsfs'} <= names
  assert not names & {'tensorflow', 'tensorflow-cpu', 'tensorflow-datasets', 'torch'}
  extras = p['optional_dependencies']
  tfds = {'tensorflow-cpu>=2.21,<2.22', 'tensorflow-datasets>=4.9.10,<5'}
  assert tfds <= set(extras['tfds'])
  # ImageNet's input: Grain workers over ArrayRecord, OpenCV decode (beside TFDS).
  assert {re.split(r'[\[<>=]', d)[0] for d in set(extras['tfds']) - tfds} == {
      'grain', 'array_record', 'opencv-python-headless', 'importlib_resources'}
  assert any(d.startswith('jax[tpu]') for d in extras['tpu']) and tfds <= set(extras['tpu'])
  assert any(d.startswith('jax[cuda12]') for d in extras['cuda12'])
  assert tfds <= set(extras['cuda12']) and tfds <= set(extras['test'])
  assert extras['torch'] == ['torch==2.13.0']  # The CPU build this index serves.
  assert any(d.startswith('pytest') for d in extras['test'])


def test_supported_range_is_python_311_to_313_and_jax_010_to_012():
  # Both ends are tested: make test (3.11, jax 0.10.2), .ci/newest_lane (3.12, newest).
  p = project()
  python = SpecifierSet(p['requires-python'])
  assert [v in python for v in ('3.10.12', '3.11.0', '3.12.1', '3.13.0', '3.14.0')] == [
      False, True, True, True, False]
  extras = p['optional_dependencies']
  jax_lines = [Requirement(d) for d in p['dependencies'] + extras['tpu'] + extras['cuda12']
               if Requirement(d).name in ('jax', 'jaxlib')]
  assert len(jax_lines) == 4
  for line in jax_lines:
    assert [v in line.specifier for v in ('0.10.1', '0.10.2', '0.11.2', '0.12.0.1', '0.13.0')] == [
        False, True, True, True, False], line


def test_console_scripts_name_functions():
  scripts = project()['scripts']
  assert {'nin-train', 'nin-sweep', 'nin-ablation', 'nin-benchmark'} <= set(scripts)
  for target in scripts.values():
    module, attr = target.split(':')
    assert callable(getattr(importlib.import_module(module), attr))


def test_no_sys_path_edits_in_the_package_or_scripts():
  files = glob.glob(os.path.join(REPO, 'nin_jax', '**', '*.py'), recursive=True) + glob.glob(
      os.path.join(REPO, 'experiments', '**', '*.py'), recursive=True)
  assert len(files) > 20
  offenders = [f for f in files if 'sys.path' in open(f).read()]
  assert offenders == []


def test_config_names_expand_to_the_shipped_files():
  assert 'cifar10' in configs.names() and '__init__' not in configs.names()
  argv = ['--config=cifar10', '--config.seed=1', '--workdir=w']
  assert configs.expand_names(argv) == [
      f'--config={configs.DIRECTORY}/cifar10.py', '--config.seed=1', '--workdir=w']
  assert configs.expand_names(['--config', 'mnist']) == [
      '--config', f'{configs.DIRECTORY}/mnist.py']
  assert configs.expand_names(['--config=my/own.py']) == ['--config=my/own.py']
  # Shipped configs import each other as package modules.
  from nin_jax.configs import svhn
  assert svhn.get_config().dataset.name == 'svhn_cropped'
