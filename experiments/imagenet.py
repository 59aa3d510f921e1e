"""Train the Caffe-zoo ImageNet NIN. See nin_jax/configs/imagenet.py."""

from nin_jax import cli, configs

if __name__ == '__main__':
  cli.run(configs.path('imagenet'))
