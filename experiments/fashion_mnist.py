"""Train NIN on Fashion-MNIST (offline quickstart). See experiments/configs/fashion_mnist.py."""

import os

from nin_jax import cli

if __name__ == '__main__':
  cli.run(os.path.join(os.path.dirname(__file__), 'configs', 'fashion_mnist.py'))
