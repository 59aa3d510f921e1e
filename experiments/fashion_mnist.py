"""Train NIN on Fashion-MNIST (offline quickstart). See nin_jax/configs/fashion_mnist.py."""

from nin_jax import cli, configs

if __name__ == '__main__':
  cli.run(configs.path('fashion_mnist'))
