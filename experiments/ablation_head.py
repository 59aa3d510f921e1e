"""The paper's head ablation (section 4.6): GAP vs FC vs FC + dropout, same data/schedule.

    python experiments/ablation_head.py --workdir=workdirs/ablation_head \
        [--config=experiments/configs/fashion_mnist.py] [--config.a.b=value ...] \
        [--seeds=0,1,2] [--fc_dropout=0.5] [--dry_run] [--report_only]

Each variant (× each seed) is an ordinary run in its own subdirectory (rerun
to resume or skip); the table goes to ablation.md/.csv (mean ± std over
seeds) and ablation_trials.md/.csv, the plots to ablation_errors.png and
ablation_curves.png. The paper's setup is
--config=experiments/configs/cifar10_noaug.py. See nin_jax/ablation.py.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from nin_jax import ablation, sweeps

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))


def _define_flags():
  config_flags.DEFINE_config_file(
      'config', os.path.join(HERE, 'configs', 'fashion_mnist.py'),
      'Config of the network to ablate (experiments/configs/cifar10_noaug.py for the paper).',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Ablation directory; one subdirectory per variant.')
  flags.DEFINE_list('seeds', [], 'Seeds to run every variant with (a sweep axis over '
                    'config.seed); empty: the config\'s seed only.')
  flags.DEFINE_float('fc_dropout', 0.5, 'Dropout on the FC head inputs in the third variant.')
  flags.DEFINE_bool('dry_run', False, 'Print the three commands; run nothing.')
  flags.DEFINE_bool('report_only', False, 'Only (re)write the table and plot from workdir.')
  flags.DEFINE_string('trainer', '', 'Experiment script each variant runs (default: '
                      'experiments/<config name>.py, else experiments/fashion_mnist.py).')
  flags.mark_flag_as_required('workdir')


def _run() -> int:
  config_path = config_flags.get_config_filename(FLAGS['config'])
  return ablation.main(
      config=FLAGS.config, config_path=config_path, workdir=FLAGS.workdir,
      argv=sys.argv[1:], fc_dropout=FLAGS.fc_dropout, dry_run=FLAGS.dry_run,
      report_only=FLAGS.report_only, seeds=_seeds(),
      trainer=FLAGS.trainer or sweeps.default_trainer(config_path, HERE))


def _seeds() -> list[int]:
  try:
    return [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise sweeps.SweepError(f'--seeds takes integers, got {",".join(FLAGS.seeds)}') from None


if __name__ == '__main__':
  sweeps.run_command(_define_flags, _run, 'variant')
