"""CIFAR-10 with translation + flip: the paper's best CIFAR-10 row (8.81% test error).

The authors' cuda-convnet setup, value by value, with its source:
- network (NIN/cifar-10_def): 3 mlpconv blocks (192-160-96 5×5,
  192-192-192 5×5, 192-192-10 3×3), 3×3/2 max pools rounding up, dropout 0.5
  after blocks 1 and 2, GAP head (paper section 3.2);
- dropout: cuda-convnet's, not inverted (training zeroes units without
  rescaling, test multiplies by 0.5; PluginsSrc extralayers DropoutNeuron);
- init (NIN/cifar-10_def): Gaussian std 0.05 everywhere, zero biases;
- solver (NIN/cifar-10_params, as the update rule works out): SGD momentum
  0.9, batch 128, lr 0.1 = epsW × logprob coeff (biases ×2 from epsB, the last
  layer ×0.1), L2 1e-4 = wc / coeff on weights only;
- schedule (the cuda-convnet README and paper section 4.1: "divide by 10
  twice"): about 200 epochs, then /10 for about 30, /10 again for about 30;
  the README decays epsW only ("change all the epsW to one tenth"):
  --config.optim.decay_scope=weights does that, the default divides every rate;
- input (paper 4.2, as the Maxout paper): per-image GCN (scale 55) then ZCA
  (filter bias 0.1) fitted on the 50k training images (cached after the first
  run);
- augmentation (paper 4.2: translation and flipping): ±4 px translation with
  zero padding (crop_border 4, the default of the authors' cifar-cropped data
  provider) and horizontal flips.

    python experiments/cifar10.py --workdir=workdirs/cifar10
"""

from nin_jax.train import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.name = 'cifar10'
  config.dataset.preprocessing = 'gcn_zca'
  config.model.preset = 'cifar10'
  config.model.dropout_form = 'cuda_convnet'  # DropoutNeuron: no rescale, ×0.5 at test
  config.augment.translate = 4
  config.augment.flip = True
  config.optim.batch_size = 128
  config.optim.learning_rate = 0.1
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (200.0, 230.0)
  config.num_epochs = 260.0
  return config


def sweep():
  """Learning rate × weight decay grid around the authors' values (experiments/sweep.py)."""
  from nin_jax.research import sweeps  # Only sweeps need it.
  return sweeps.grid(**{'optim.learning_rate': (0.05, 0.1, 0.2),
                        'optim.weight_decay': (1e-4, 5e-4)})
