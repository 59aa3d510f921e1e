"""How every command refuses bad input: one `error: ...` line, exit status 2.

A bad flag, a bad --config override, a config file that cannot be a config,
and the errors a run raises for input the user can fix (USER_ERRORS) all end
the command the same way: one line on stderr, `error: <what is wrong>`, exit
status 2, no traceback; in a multi-process run, on every process.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

from absl import flags

from nin_jax.data import datasets
from nin_jax.runtime import checkpoint
from nin_jax.runtime import host_errors
from nin_jax.runtime import sharding
from nin_jax.runtime import tensorflow_loader
from nin_jax.train import config_file

BAD_INPUT = 2  # The exit status of every refusal here.

# Errors that mean "the input is wrong": shown as a message, not a traceback.
USER_ERRORS = (ValueError, datasets.DatasetError, checkpoint.CheckpointError,
               FileNotFoundError, tensorflow_loader.NotInstalledError)


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
  """Says `error: message` and exits with `code`; in a multi-process run, on every process."""
  line = f'error: {message}'
  if sharding.is_multiprocess():  # Not only here: the others would wait in a collective.
    host_errors.stop_everywhere(line, code)
  print(line, file=sys.stderr, flush=True)
  sys.exit(code)


def check_config_file(argv: Sequence[str], default_config: str | None) -> None:
  """Refuses the --config file (or `default_config`) unless it loads and has get_config().

  Before ml_collections loads it: a bad file is one line, not a traceback.
  """
  try:
    config_file.check_argv(list(argv), default_config)
  except config_file.ConfigFileError as e:
    fail(str(e))


def define_flags(define: Callable[[], None]) -> None:
  """Runs `define`; a bad --config override (applied while the flag is defined) is one line."""
  try:
    define()
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    fail(f'bad flag or --config override: {config_file.one_line(e)}')


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing (app.run's flags_parser), a bad flag or override as one line
  (the same line as `define_flags`: which of the two sees a bad override depends
  on whether --config has a default).

  config_flags applies --config.* overrides while parsing; an unknown key or a
  value of the wrong type would otherwise end in a chained traceback.
  """
  try:
    return flags.FLAGS(list(argv))
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    fail(f'bad flag or --config override: {config_file.one_line(e)}')
