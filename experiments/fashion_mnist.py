"""Train NIN on Fashion-MNIST (offline quickstart). See nin_jax/configs/fashion_mnist.py."""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.train('fashion_mnist')
