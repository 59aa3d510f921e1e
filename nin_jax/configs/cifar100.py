"""CIFAR-100: the paper's 35.68% test error row.

The paper "used the same setting as CIFAR-10" without augmentation; the
authors' CIFAR-100 files set conv1's init std to 0.001 and the 1×1 layers' to
0.01 (the `cifar100` preset), base lr 0.02 and L2 5e-4, used here. GCN + ZCA
as for CIFAR-10; 200/30/30-epoch step schedule.

    python experiments/cifar10.py --config=nin_jax/configs/cifar100.py
"""

from nin_jax.configs import cifar10_noaug


def get_config():
  config = cifar10_noaug.get_config()
  config.dataset.name = 'cifar100'
  config.model.preset = 'cifar100'
  config.optim.learning_rate = 0.02
  config.optim.weight_decay = 5e-4
  return config
