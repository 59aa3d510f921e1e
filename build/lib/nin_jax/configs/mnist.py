"""MNIST: the paper's 0.47% test error row (paper Table 4, section 4.5).

Sources, value by value:
- network: the MNIST preset (96-64-48 / 128-96-48 / 128-96-10, all 5×5,
  349,674 parameters), 3×3/2 max pools, dropout 0.5 after blocks 1 and 2 in
  cuda-convnet's non-inverted form, GAP head (the authors' cuda-convnet
  definitions; nin-facts "Other presets");
- input: minus the training set's per-pixel mean image, no division by a
  standard deviation (the authors' data provider); the [0, 1] pixel scale is
  INFERRED; no augmentation (paper 4.5);
- init std 0.05 and the CIFAR-10 solver (lr 0.1, biases ×2, last layer ×0.1,
  L2 1e-4, momentum 0.9, batch 128): INFERRED from the CIFAR-10 files;
- schedule: INFERRED. Never published; the paper's rule is "divide by 10 when
  training accuracy stops improving", twice: 100 epochs then /10 for 20 and 20.

    python experiments/cifar10.py --config=nin_jax/configs/mnist.py
"""

from nin_jax.configs import cifar10_noaug


def get_config():
  config = cifar10_noaug.get_config()
  config.dataset.name = 'mnist'
  config.dataset.preprocessing = 'mean_image'
  config.model.preset = 'mnist'
  config.optim.decay_epochs = (100.0, 120.0)
  config.num_epochs = 140.0
  return config
