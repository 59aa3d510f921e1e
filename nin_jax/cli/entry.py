"""Where a nin_jax process starts: the console scripts and experiments/*.py.

Each entry applies the process settings (process_setup.configure) and only
then imports the command it runs: jaxlib reads its log level when it loads,
which importing the command would do first. That is why the imports below sit
inside the functions.
"""

from __future__ import annotations

from nin_jax.runtime import process_setup


def train(config_name: str = 'fashion_mnist') -> None:
  """`nin-train`, and experiments/<dataset>.py with its own config as the default."""
  process_setup.configure()
  from nin_jax import configs  # pylint: disable=g-import-not-at-top
  from nin_jax.cli import train_command as cli  # pylint: disable=g-import-not-at-top
  cli.run(configs.path(config_name))


def sweep() -> None:
  """`nin-sweep`: a config's sweep(), one run per trial, then the results table."""
  _command('sweep')


def ablation() -> None:
  """`nin-ablation`: the paper's head ablation (GAP vs FC vs FC + dropout)."""
  _command('ablation')


def benchmark() -> None:
  """`nin-benchmark`: a config's train-step throughput, optionally against PyTorch."""
  _command('benchmark')


def classmap() -> None:
  """`nin-classmap`: class maps of a trained run (the paper's figure 4)."""
  _command('classmap')


def _command(name: str) -> None:
  process_setup.configure()
  from nin_jax.cli import research_commands  # pylint: disable=g-import-not-at-top
  getattr(research_commands, name)()
