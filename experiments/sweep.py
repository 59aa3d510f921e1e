"""Run a config's sweep(): one ordinary run per trial, then a results table and plot.

    python experiments/sweep.py --config=nin_jax/configs/fashion_mnist.py \
        --workdir=workdirs/sweep_fmnist [--config.num_epochs=2] [--dry_run] \
        [--metric=val/accuracy] [--report_only]

Trials live in <workdir>/trial_<i>_<key=value...>/; rerunning skips finished
trials and resumes an interrupted one. --dry_run prints each trial's command.
"""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.sweep()
