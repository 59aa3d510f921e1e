"""The paper's head ablation (section 4.6): GAP vs FC vs FC + dropout, same data/schedule.

    python experiments/ablation_head.py --workdir=workdirs/ablation_head \
        [--config=nin_jax/configs/fashion_mnist.py] [--config.a.b=value ...] \
        [--seeds=0,1,2] [--fc_dropout=0.5] [--dry_run] [--report_only]

Each variant (× each seed) is an ordinary run in its own subdirectory (rerun
to resume or skip); the table goes to ablation.md/.csv (mean ± std over
seeds) and ablation_trials.md/.csv, the plots to ablation_errors.png and
ablation_curves.png. The paper's setup is --config=cifar10_noaug. See
nin_jax/research/ablation.py; the command is nin_jax/cli/research_commands.py (`nin-ablation`).
"""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.ablation()
