"""Train the paper's NIN on CIFAR-10. See experiments/configs/cifar10.py."""

import os

from nin_jax import cli

if __name__ == '__main__':
  cli.run(os.path.join(os.path.dirname(__file__), 'configs', 'cifar10.py'))
