"""The experiment configs that ship with nin_jax: one `get_config()` file per paper row.

Config files build on each other (`from nin_jax.configs import cifar10`), which
works wherever nin_jax is installed. `--config` takes a file path or one of
these names (`--config=cifar10`).
"""

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The file of the shipped config `name` (e.g. 'cifar10')."""
  return os.path.join(DIRECTORY, f'{name}.py')


def names() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(DIRECTORY)
                if f.endswith('.py') and not f.startswith('_'))


def expand_names(argv: list[str]) -> list[str]:
  """argv with `--config=NAME` (a shipped config's name) replaced by its file.

  Anything else, paths included, passes through unchanged.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
      name, sep, rest = value.partition(':')  # config_flags' `file:arg` form
      if name in names():
        out[i] = f'--config={path(name)}{sep}{rest}'
    elif arg == '--config' and i + 1 < len(out) and out[i + 1] in names():
      out[i + 1] = path(out[i + 1])
  return out
