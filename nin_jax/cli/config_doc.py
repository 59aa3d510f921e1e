"""`--print_config`: the resolved config, one field a line, with its comment from config.py.

    python experiments/cifar10.py --print_config [--config.optim.learning_rate=0.05]

The comments are read from `base_config()`'s source, so they cannot drift
from the schema: a field's comment is the one on its line, or else the
comment lines right above it.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import tokenize

import ml_collections

from nin_jax.train import config as config_lib


@functools.cache
def field_comments() -> dict[str, str]:
  """{'optim.batch_size': 'global, across all devices and hosts', ...} from config.py."""
  source = inspect.getsource(config_lib)  # base_config() and its _<group>_fields()
  comments: dict[int, str] = {}
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string.lstrip('#').strip()
  lines = source.splitlines()

  def comment_for(first: int, last: int) -> str:
    if last in comments and lines[last - 1].strip()[:1] != '#':
      return comments[last]
    above, line = [], first - 1
    while line in comments and lines[line - 1].strip().startswith('#'):
      above.insert(0, comments[line])
      line -= 1
    return ' '.join(above)

  out = {}
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.FunctionDef) and node.name.startswith('_') and node.name.endswith(
        '_fields'):  # def _optim_fields(): return ConfigDict(dict(a=..., b=...))
      for returned in (n.value for n in ast.walk(node) if isinstance(n, ast.Return)):
        out.update(_keyword_comments(node.name[1:-len('_fields')], returned, comment_for))
    elif (isinstance(node, ast.Assign) and len(node.targets) == 1
          and isinstance(node.targets[0], ast.Attribute)):
      name = node.targets[0].attr
      grouped = _keyword_comments(name, node.value, comment_for)
      out.update(grouped or {name: comment_for(node.lineno, node.end_lineno)})
  return out


def _keyword_comments(group: str, value, comment_for) -> dict[str, str]:
  """{'group.a': comment} for `ConfigDict(dict(a=..., ...))`; {} for any other value."""
  if not (isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Call)
          and value.args[0].keywords):
    return {}
  return {f'{group}.{kw.arg}': comment_for(kw.value.lineno, kw.value.end_lineno)
          for kw in value.args[0].keywords}


def format_config(config: ml_collections.ConfigDict, source: str = '') -> str:
  """Every field as `name = value  # comment`, sorted by name."""
  comments = field_comments()
  rows = []

  def walk(node, prefix):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, f'{name}.')
      else:
        rows.append((f'{name} = {value!r}', comments.get(name, '')))
  walk(config, '')
  width = max(len(left) for left, _ in rows)
  head = [f'# The resolved config{f" of {source}" if source else ""}. Override any '
          'field with --config.<name>=<value>;', '# the checks are in nin_jax/train/config.py.']
  return '\n'.join(head + [f'{left:<{width}}  # {c}' if c else left for left, c in rows])
