"""SVHN: the paper's 2.35% test error row.

The SVHN preset (128-96-64 / 320-256-128 / 384-256-10, all 5×5, 1,986,026
parameters), local contrast normalisation (7×7 Gaussian window) as the paper
and the Maxout paper did, no augmentation, the CIFAR-10 solver.

One difference stated plainly: the paper trained on train + extra (about
600k images, 6,000 held out for validation); this config uses TFDS
`svhn_cropped`'s 73,257-image train split.

    python experiments/cifar10.py --config=nin_jax/configs/svhn.py
"""

from nin_jax.configs import cifar10_noaug


def get_config():
  config = cifar10_noaug.get_config()
  config.dataset.name = 'svhn_cropped'
  config.dataset.preprocessing = 'lcn'
  config.model.preset = 'svhn'
  # 73k images: fewer epochs cover the same number of updates as ~1/7 of CIFAR's.
  config.optim.decay_epochs = (100.0, 120.0)
  config.num_epochs = 140.0
  return config
