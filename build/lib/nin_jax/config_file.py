"""The `--config` file, checked before ml_collections imports it.

ml_collections reports a missing file, a directory or a syntax error as a
long importlib traceback (and, with `--config.*` overrides, while the flag is
being defined). Each of these is a user error with a one-line cause, so the
file is looked at first: it exists, is a file, parses, and binds get_config.
"""

from __future__ import annotations

import ast
import os


class ConfigFileError(ValueError):
  """The --config file cannot be a config: the message says why, in one line."""


def path_from_argv(argv: list[str], default: str) -> str:
  """The config file `--config=PATH` (or `--config PATH`) names, else `default`."""
  path = default
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      path = argv[i + 1]
  # config_flags accepts `file.py:argument`; the argument is not part of the path.
  if not os.path.exists(path) and ':' in path and os.path.exists(path.rsplit(':', 1)[0]):
    path = path.rsplit(':', 1)[0]
  return path


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
