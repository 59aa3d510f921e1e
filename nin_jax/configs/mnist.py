"""MNIST: the paper's 0.47% test error row.

The MNIST preset (96-64-48 / 128-96-48 / 128-96-10, all 5×5, 349,674
parameters), no augmentation, dropout between blocks, Gaussian std 0.05 init,
the CIFAR-10 solver. The paper gives no MNIST schedule; 100 epochs then /10 for
20 and 20 is this config's choice (unconfirmed).

    python experiments/cifar10.py --config=nin_jax/configs/mnist.py
"""

from nin_jax.configs import cifar10_noaug


def get_config():
  config = cifar10_noaug.get_config()
  config.dataset.name = 'mnist'
  config.dataset.preprocessing = 'standardize'
  config.model.preset = 'mnist'
  config.optim.decay_epochs = (100.0, 120.0)
  config.num_epochs = 140.0
  return config
