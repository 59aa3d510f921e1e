"""The package's import direction, read from the source (AST), not from a run.

nin_jax is layered by concern; a subpackage imports only those below it:

    runtime  ←  model, data  ←  train  ←  research  ←  cli
                                  ↑
                               configs (train.config; research.sweeps inside sweep())

`runtime` imports nothing else of nin_jax; `model` and `data` only `runtime`;
`train` adds them; `research` adds `train`; `cli` may import everything. Config
files import the schema (train.config) and, inside their sweep() only, the sweep
helpers. Imports inside functions count: a late import is still a dependency.
"""

from __future__ import annotations

import ast
import os

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, 'nin_jax')

# Subpackage -> the subpackages it may import (besides itself), at module level.
MAY_IMPORT = {
    'runtime': set(),
    'model': {'runtime'},
    'data': {'runtime'},
    'train': {'runtime', 'model', 'data'},
    'research': {'runtime', 'model', 'data', 'train'},
    'cli': {'runtime', 'model', 'data', 'train', 'research', 'configs'},
    'configs': {'train'},
    '': {'runtime'},  # nin_jax/__init__.py
}
# Imports allowed only inside a function: a config's sweep() builds its trials.
MAY_IMPORT_IN_FUNCTIONS = {'configs': {'research'}}


def _modules() -> dict[str, str]:
  """Dotted module name -> file, for every module of the package."""
  found = {}
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return found


MODULES = _modules()


def imports_of(module: str) -> list[tuple[str, bool, int]]:
  """(imported nin_jax module, inside a function?, line) for each import in `module`."""
  path = MODULES[module]
  tree = ast.parse(open(path).read(), path)
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  found = []

  def visit(node, in_function: bool):
    for child in ast.iter_child_nodes(node):
      inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      if isinstance(child, ast.Import):
        found.extend((a.name, in_function, child.lineno) for a in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ''
        if child.level:
          base = '.'.join(package.split('.')[:len(package.split('.')) - child.level + 1]
                          + ([base] if base else []))
        for alias in child.names:  # `from pkg import module` names a module.
          target = f'{base}.{alias.name}'
          found.append((target if target in MODULES else base, in_function, child.lineno))
      visit(child, inner)

  visit(tree, False)
  return [(name, inner, line) for name, inner, line in found
          if name == 'nin_jax' or name.startswith('nin_jax.')]


def layer(module: str) -> str:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else ''


def test_every_module_belongs_to_a_layer():
  assert {layer(m) for m in MODULES} <= set(MAY_IMPORT), sorted(
      {layer(m) for m in MODULES} - set(MAY_IMPORT))


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_follow_the_direction(module):
  own = layer(module)
  wrong = []
  for target, in_function, line in imports_of(module):
    allowed = MAY_IMPORT[own] | {own}
    if in_function:
      allowed |= MAY_IMPORT_IN_FUNCTIONS.get(own, set())
    if layer(target) not in allowed:
      wrong.append(f'{MODULES[module]}:{line} imports {target}')
  assert not wrong, '\n'.join(wrong)


def test_no_import_cycles():
  graph = {m: {t for t, _, _ in imports_of(m) if t in MODULES and t != m} for m in MODULES}
  cycles, state = [], {}

  def visit(module, path):
    state[module] = 'open'
    for target in sorted(graph[module]):
      if state.get(target) == 'open':
        cycles.append(' → '.join(path[path.index(target):] + [target]))
      elif target not in state:
        visit(target, path + [target])
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
  """A runtime module importing train is caught: the rule can fail."""
  path = tmp_path / 'bad.py'
  path.write_text('def f():\n  from nin_jax.train import loop\n')
  monkeypatch.setitem(MODULES, 'nin_jax.runtime.bad', str(path))
  with pytest.raises(AssertionError, match='imports nin_jax.train.loop'):
    test_imports_follow_the_direction('nin_jax.runtime.bad')
