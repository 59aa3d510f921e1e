"""Train the paper's NIN on CIFAR-10. See nin_jax/configs/cifar10.py."""

from nin_jax import cli, configs

if __name__ == '__main__':
  cli.run(configs.path('cifar10'))
