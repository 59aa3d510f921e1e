"""Train the Caffe-zoo ImageNet NIN. See experiments/configs/imagenet.py."""

import os

from nin_jax import cli

if __name__ == '__main__':
  cli.run(os.path.join(os.path.dirname(__file__), 'configs', 'imagenet.py'))
