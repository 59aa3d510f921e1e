"""ImageNet: the Caffe Model Zoo NIN (paper: 59.36% top-1 centre-crop accuracy).

4 mlpconv blocks (7,595,176 parameters; 224 → 54 → 27 → 13 → 6 → 1), dropout
0.5 after the third pool, GAP over the 6×6 class maps (the zoo's
train_val.prototxt; init std 0.01 for conv1, conv3 and cccp8, 0.05
elsewhere). The zoo solver (solver.prototxt): SGD momentum 0.9, batch 64,
base lr 0.01 (biases ×2), L2 5e-4 on weights, lr ×0.1 every 200k iterations, 450k iterations (10, 20 and 22.5 epochs of 1.28M images
at batch 64). Input (the zoo's train_val.prototxt): random 224 crop + mirror
minus the per-pixel mean IMAGE of the training set (the zoo's `mean_file`;
computed once per dataset on the first run, one pass over 1.28M images shared
by all hosts, and kept beside the dataset or in dataset.cache_dir; `--config.dataset.imagenet_mean=pixel` subtracts
Caffe's mean pixel instead); evaluation on the centre crop
(nin_jax/data/imagenet_input.py). ASSUMED: the 256×256 warp (aspect ratio not
kept), Caffe's usual convert_imageset resize; the zoo does not say how its
LMDB was built. Dropout is Caffe's inverted form.

The learning rate is stated for the reference batch 64 and scales linearly:
`--config.optim.batch_size=1024` trains at lr 0.16 with the same schedule in
epochs. The last layer's ×0.1 of the CIFAR solver is not in the zoo solver.

Needs a prepared `imagenet2012` (see nin_jax/data/imagenet_input.py):
    python experiments/imagenet.py --config.dataset.data_dir=gs://bucket/tfds
or its pre-resized cache (nin_jax/data/imagenet_resized.py; same preprocessing after):
    python experiments/imagenet.py --config.dataset.resized_dir=gs://bucket/resized
Decoding runs in dataset.workers processes (default: one per core).
"""

from nin_jax.train import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.dataset.name = 'imagenet2012'
  config.dataset.image_size = 224
  config.dataset.imagenet_mean = 'image'
  config.model.preset = 'imagenet'
  config.model.dropout_form = 'inverted'  # Caffe's dropout layer
  config.optim.batch_size = 64
  config.optim.reference_batch_size = 64
  config.optim.learning_rate = 0.01
  config.optim.weight_decay = 5e-4
  config.optim.last_layer_lr_mult = 1.0
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (10.0, 20.0)
  config.num_epochs = 22.5
  config.eval_every_epochs = 1.0
  config.log_every_steps = 500
  config.checkpoint_every_steps = 5000
  return config


def sweep():
  """Global batch with linearly scaled lr (the config scales it)."""
  for batch in (256, 1024, 4096):
    yield {'optim.batch_size': batch}
