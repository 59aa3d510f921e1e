"""Run a config's sweep(): one ordinary run per trial, then a results table and plot.

    python experiments/sweep.py --config=experiments/configs/fashion_mnist.py \
        --workdir=workdirs/sweep_fmnist [--config.num_epochs=2] [--dry_run] \
        [--metric=test/accuracy] [--report_only]

Trials live in <workdir>/trial_<i>_<key=value...>/; rerunning skips finished
trials and resumes an interrupted one. --dry_run prints each trial's command.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from nin_jax import sweeps

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))


def _define_flags():
  config_flags.DEFINE_config_file('config', None, 'Config file with get_config() and sweep().',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Sweep directory; one subdirectory per trial.')
  flags.DEFINE_string('metric', 'test/accuracy', 'Metric to sort and plot by.')
  flags.DEFINE_bool('dry_run', False, 'Print every trial command; run nothing.')
  flags.DEFINE_bool('report_only', False, 'Only (re)write the table and plot from workdir.')
  flags.DEFINE_string('trainer', '', 'Experiment script each trial runs (default: '
                      'experiments/<config name>.py, else experiments/fashion_mnist.py).')
  flags.mark_flag_as_required('workdir')


def _run() -> int:
  config_path = config_flags.get_config_filename(FLAGS['config']) if FLAGS.config else None
  return sweeps.main(
      config=FLAGS.config, config_path=config_path, workdir=FLAGS.workdir,
      argv=sys.argv[1:], metric=FLAGS.metric, dry_run=FLAGS.dry_run,
      report_only=FLAGS.report_only,
      trainer=FLAGS.trainer or sweeps.default_trainer(config_path or '', HERE))


if __name__ == '__main__':
  sweeps.run_command(_define_flags, _run, 'trial')
