"""The `--config` file, checked before ml_collections imports it.

ml_collections reports a missing file, a directory, a syntax error, a failed
import or an exception in get_config() as a long importlib or absl traceback
(and, with `--config.*` overrides, while the flag is being defined). Each of
these is a user error with a one-line cause, so the file is looked at first:
it exists, is a file, parses and binds get_config, and get_config() runs,
with any exception shown as the user's own line of the file.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import traceback
import types


class ConfigFileError(ValueError):
  """The --config file cannot be a config: the message says why, in one line."""


def path_from_argv(argv: list[str], default: str) -> str:
  """The config file `--config=PATH` (or `--config PATH`) names, else `default`."""
  return _split(_spec_from_argv(argv, default))[0]


def check_argv(argv: list[str], default: str | None) -> None:
  """`check`, then the get_config() of the file argv's --config names (or `default`).

  The file is executed here as ml_collections will execute it, so a failing
  import or get_config() is one line (`users_code`). Nothing to check when
  neither names a file (a command whose --config is optional).
  """
  spec = _spec_from_argv(argv, default)
  if spec is None:
    return
  path, arguments = _split(spec)
  check(path)
  module = load(path)
  with users_code(path):
    module.get_config(*arguments)


def _spec_from_argv(argv: list[str], default: str | None) -> str | None:
  spec = default
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--config='):
      spec = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def _split(spec: str) -> tuple[str, list[str]]:
  """(path, get_config arguments): config_flags accepts `file.py:argument`."""
  if not os.path.exists(spec) and ':' in spec:
    path, argument = spec.split(':', 1)  # As config_flags splits it.
    if os.path.exists(path):
      return path, [argument]
  return spec, []


def check(path: str) -> None:
  """Raises ConfigFileError unless `path` is a Python file that binds get_config."""
  if not os.path.exists(path):
    raise ConfigFileError(f'cannot load config file {path}: [Errno 2] No such file or directory')
  if os.path.isdir(path):
    raise ConfigFileError(f'cannot load config file {path}: it is a directory; '
                          'name a .py file with a get_config() function')
  try:
    with open(path, encoding='utf-8') as f:
      source = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigFileError(f'cannot load config file {path}: {e}') from None
  try:
    tree = ast.parse(source, filename=path)
  except SyntaxError as e:
    raise ConfigFileError(f'config file {path}, line {e.lineno}: syntax error: {e.msg}'
                          ) from None
  if 'get_config' not in _top_level_names(tree):
    raise ConfigFileError(f'config file {path} defines no get_config() function')


def load(path: str, name: str = '_nin_jax_config') -> types.ModuleType:
  """The config file at `path` as a module; ConfigFileError naming the user's line
  if its import fails (a module that is not installed, an exception at top level)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  with users_code(path):
    spec.loader.exec_module(module)
  return module


@contextlib.contextmanager
def users_code(path: str):
  """Runs code of the config file at `path`: any exception it raises becomes one line.

  A ConfigFileError naming the deepest line of that file on the way to the
  exception (the user's own frame), and the exception.
  """
  try:
    yield
  except Exception as e:  # Anything the user's code raises.
    raise ConfigFileError(_where(e, path) + f'{type(e).__name__}: {one_line(e)}') from None


def _where(error: BaseException, path: str) -> str:
  """'config file PATH, line N, in FUNCTION: ' for the file's deepest frame in the traceback."""
  mine = [frame for frame in traceback.extract_tb(error.__traceback__)
          if os.path.realpath(frame.filename) == os.path.realpath(path)]
  if not mine:
    return f'config file {path}: '
  frame = mine[-1]
  within = '' if frame.name == '<module>' else f', in {frame.name}'
  return f'config file {path}, line {frame.lineno}{within}: '


def one_line(error: BaseException) -> str:
  """An exception's message on one line, as a user should read it.

  ml_collections wraps its KeyError for an unknown field in an AttributeError
  or KeyError, and that KeyError's message is a sentence with a newline
  before its "Did you mean" hint, which str() would show as a quoted repr:
  the innermost message is taken, unquoted, its lines joined. A KeyError of a
  bare key keeps its quotes, as Python shows it.
  """
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error)
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    if any(c.isspace() for c in error.args[0]):
      text = error.args[0]
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def _top_level_names(tree: ast.Module) -> set[str]:
  names = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split('.')[0] for a in node.names)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(t.id for t in targets if isinstance(t, ast.Name))
    else:  # `if`/`try` blocks at module level may define it too: be generous.
      names.update(n.name for n in ast.walk(node)
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
  return names
