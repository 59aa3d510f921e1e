"""Train the Caffe-zoo ImageNet NIN. See nin_jax/configs/imagenet.py."""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.train('imagenet')
