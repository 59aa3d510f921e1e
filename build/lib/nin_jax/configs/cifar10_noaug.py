"""CIFAR-10 without data augmentation: the paper's 10.41% test error row.

Exactly nin_jax/configs/cifar10.py (GCN + ZCA, the authors' network,
dropout form and solver; sources listed there) with translation and flips
switched off (paper section 4.2, Table 1). This is also the baseline (GAP row)
of the paper's head ablation, Table 5.

    python experiments/cifar10.py --config=nin_jax/configs/cifar10_noaug.py
"""

from nin_jax.configs import cifar10


def get_config():
  config = cifar10.get_config()
  config.augment.translate = 0
  config.augment.flip = False
  return config
