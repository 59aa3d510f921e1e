"""The paper's head ablation (section 4.6): GAP vs FC vs FC + dropout, same seed/data/schedule.

    python experiments/ablation_head.py --workdir=workdirs/ablation_head \
        [--config=nin_jax/configs/fashion_mnist.py] [--config.a.b=value ...] \
        [--fc_dropout=0.5] [--dry_run] [--report_only]

Each variant is an ordinary run in <workdir>/{gap,fc,fc_dropout}/ (rerun to
resume or skip); the table goes to ablation.md/.csv, the curves to
ablation_curves.png. See nin_jax/ablation.py.
"""

from nin_jax import commands

if __name__ == '__main__':
  commands.ablation()
