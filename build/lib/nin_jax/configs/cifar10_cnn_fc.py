"""The conventional CNN with an FC head (paper section 4.6): 17.56% test error.

nin_jax/configs/cifar10_cnn.py with the global average pooling replaced by
one fully connected layer on the flattened 4×4×10 local-layer maps (the
paper: the local layer's maps "fed to a fully connected layer"); no dropout.
Which details are from the paper and which inferred: see cifar10_cnn.py.

    python experiments/cifar10.py --config=nin_jax/configs/cifar10_cnn_fc.py
"""

from nin_jax.configs import cifar10_cnn


def get_config():
  config = cifar10_cnn.get_config()
  config.model.head = 'fc'
  config.model.fc_hidden = ()
  return config
