"""CIFAR-10, the paper's NIN with translation + flip (paper: 8.81% test error).

The authors' cuda-convnet setup: 3 mlpconv blocks (pool2 max), dropout 0.5
after the first two, Gaussian init std 0.05, SGD momentum 0.9 at batch 128,
lr 0.1 (biases ×2, last layer ×0.1), L2 1e-4 on weights, 200 epochs then /10
for 30 and /10 for 30 more. Augmentation: random translation (±4 px, the
padding the paper leaves unstated) and horizontal flips.

Preprocessing here is per-channel standardisation; the paper's GCN + ZCA is
`--config.dataset.preprocessing=gcn_zca`.
"""

from nin_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.name = 'cifar10'
  config.model.preset = 'cifar10'
  config.augment.translate = 4
  config.augment.flip = True
  return config


def sweep():
  """Learning rate × weight decay grid (run with experiments/sweep.py)."""
  for lr in (0.05, 0.1, 0.2):
    for wd in (1e-4, 5e-4):
      yield {'optim.learning_rate': lr, 'optim.weight_decay': wd}
