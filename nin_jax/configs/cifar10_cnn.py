"""The paper's GAP ablation on a conventional CNN (section 4.6): GAP row, 16.46% error.

From the paper: the conventional CNN of Hinton et al. (2012), three
convolutional layers and one locally connected layer, with that layer's 16
maps cut to 10 so that global average pooling can replace the head; CIFAR-10.
Rows (test error): FC 17.56%, FC + dropout 15.99%, GAP 16.46% (this config;
cifar10_cnn_fc.py and cifar10_cnn_fc_dropout.py are the other two).

INFERRED (the paper gives no more): the layer sizes of the `cifar10_cnn`
preset (see nin_jax/model/architectures.py), the authors' CIFAR-10 NIN solver (lr 0.1,
biases ×2, last layer ×0.1, L2 1e-4, momentum 0.9, batch 128, 200/30/30
epochs), GCN + ZCA input, no augmentation, cuda-convnet's dropout form.

    python experiments/cifar10.py --config=nin_jax/configs/cifar10_cnn.py
"""

from nin_jax.configs import cifar10_noaug


def get_config():
  config = cifar10_noaug.get_config()
  config.model.preset = 'cifar10_cnn'
  config.model.head = 'gap'
  config.model.fc_dropout = 0.0
  return config
