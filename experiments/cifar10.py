"""Train the paper's NIN on CIFAR-10. See nin_jax/configs/cifar10.py."""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.train('cifar10')
