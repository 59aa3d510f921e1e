"""The config schema: every field a run reads, its default, and its checks.

Experiment configs (nin_jax/configs/*.py) start from `base_config()` and
override fields; the command line overrides any of them with
`--config.a.b=value`. The dict is locked, so a misspelt key is an error, and
ml_collections keeps each field's type, so `--config.optim.batch_size=abc` is
an error too. `validate` catches values of the right type that make no sense,
before anything is compiled.
"""

from __future__ import annotations

import difflib
import functools
import os

import ml_collections

from nin_jax.data import datasets
from nin_jax.data import preprocess
from nin_jax.model import architectures

# Imports nothing that imports jax, flax or optax: config files load without them.
DTYPES = ('float32', 'bfloat16')
IMAGENET_MEANS = ('pixel', 'image')
SCHEDULES = ('step', 'cosine', 'constant')  # optim.schedule; nin_jax/train/optim.py builds them
DECAY_SCOPES = ('all', 'weights')  # optim.decay_scope (see nin_jax/train/optim.py)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                    # data order, init, dropout and augmentation all derive from it

  c.dataset = _dataset_fields()
  c.augment = ml_collections.ConfigDict(dict(
      translate=0,              # max random shift in pixels (zero padding)
      flip=False,               # random horizontal flips (off for digits)
  ))
  c.model = _model_fields()
  c.optim = _optim_fields()
  c.num_epochs = 260.0          # training length (fractions allowed)
  # >0: stop at this step (smoke runs, a first look). The schedule still spans
  # num_epochs, so the run is a prefix of the full one and resumes into it.
  c.max_steps = 0
  # Train steps per compiled call (lax.scan): 0 = auto (32 on an accelerator
  # with the data on device, else 1). Log/eval/checkpoint steps stay exact.
  c.steps_per_dispatch = 0
  c.eval_batch_size = 0         # 0: same as optim.batch_size
  c.eval_every_epochs = 1.0     # test-set evaluation interval
  c.log_every_steps = 50        # progress line, TensorBoard and metrics.jsonl interval
  c.checkpoint_every_steps = 1000  # also at the end and on SIGTERM
  c.keep_checkpoints = 3        # newest checkpoints kept on disk
  c.write_plots = True          # curves.png at the end of training
  # TEST-ONLY fault injection, used by tests/test_reliability.py to reproduce
  # crashes and numerical faults at exact points. Experiment configs never set
  # these; the defaults change nothing about a run.
  c.testing = _testing_fields()
  return c


def _dataset_fields() -> ml_collections.ConfigDict:
  """config.dataset: Where the images come from and how they are prepared."""
  return ml_collections.ConfigDict(dict(
      name='cifar10',           # cifar10 | cifar100 | svhn | mnist | fashion_mnist | imagenet2012
      source='tfds',            # 'tfds', or 'idx' for local MNIST-format files
      data_dir='',              # TFDS data_dir ('' = TFDS default)
      idx_dir='',               # IDX files ('' = Debian's Fashion-MNIST, for fashion_mnist only)
      # standardize | gcn_zca | gcn_lcn (SVHN as pylearn2) | lcn | mean_image | none
      preprocessing='standardize',
      gcn_scale=55.0,           # GCN: each image's L2 norm after normalisation
      zca_filter_bias=0.1,      # ZCA: added to the covariance's eigenvalues
      # where fitted ZCA lives ('' = ~/.cache/nin_jax) and ImageNet's mean image
      # ('' = beside the dataset; set it, e.g. to the workdir, where that is read-only)
      cache_dir='',
      image_size=224,           # ImageNet crop (224, or 227 as in Caffe)
      imagenet_mean='pixel',    # ImageNet: 'image' (zoo mean_file, computed once, cached) or 'pixel'
      workers=-1,               # ImageNet decode processes: -1 = one per core of the host, 0 = none
      resized_dir='',           # ImageNet: read the pre-resized cache here (nin_jax/data/imagenet_resized.py)
      train_extra=False,        # also train on the 'extra' split (SVHN)
      validation_per_class_train=0,  # held out of 'train' per class for validation metrics
      validation_per_class_extra=0,  # held out of 'extra' per class (with train_extra)
      # Hold the train split on device and gather batches in the step: True,
      # False, or None = auto (on an accelerator when it fits; nin_jax/train/steps_per_call.py).
      on_device=ml_collections.FieldReference(None, field_type=bool),
      train_subset=0,           # >0: use this many training images (quick runs)
      test_subset=0,            # >0: evaluate on this many test images
  ))


def _model_fields() -> ml_collections.ConfigDict:
  """config.model: The network: the paper's preset and what the ablations change."""
  return ml_collections.ConfigDict(dict(
      preset='cifar10',         # the paper's network (nin_jax/model/architectures.py)
      width_multiplier=1.0,     # scales every layer's width; 1.0 = the paper
      head='gap',               # 'gap' (the paper) or 'fc' (the ablation)
      fc_hidden=(),             # hidden widths of the FC head
      fc_dropout=0.0,           # dropout on the FC head's inputs
      dropout_rate=0.5,         # between mlpconv blocks, where the preset puts it
      # 'inverted' (Caffe: survivors ×1/(1-p) in training) or 'cuda_convnet'
      # (the authors' CIFAR/SVHN/MNIST runs: no rescale in training, ×(1-p) at test).
      dropout_form='inverted',
      batch_norm=False,         # after every convolution (not in the paper)
      init='paper',             # 'paper' (Gaussian stds of the preset) or 'he'
      dtype='float32',          # compute dtype; params stay float32
      conv_impl='auto',         # auto | conv | matmul | patches (see nin.py)
  ))


def _optim_fields() -> ml_collections.ConfigDict:
  """config.optim: The authors' SGD and its schedule."""
  return ml_collections.ConfigDict(dict(
      batch_size=128,           # global, across all devices and hosts
      learning_rate=0.1,        # weights' base rate (biases: × bias_lr_mult)
      reference_batch_size=0,   # >0: lr scales by batch_size / this
      momentum=0.9,             # applied as in Caffe's SGD
      nesterov=False,           # Nesterov momentum instead of heavy ball
      weight_decay=1e-4,        # L2 on weights only
      bias_lr_mult=2.0,         # biases learn this many times faster
      last_layer_lr_mult=0.1,   # the class-map layer's rate multiplier
      # <0: last_layer_lr_mult × bias_lr_mult (cuda-convnet: 0.2); the Caffe zoo
      # CIFAR-10 solver sets the logits layer's bias alone (blobs_lr 0.1).
      last_layer_bias_lr_mult=-1.0,
      schedule='step',          # step | cosine | constant
      decay_epochs=(200.0, 230.0),  # 'step': epochs at which lr × decay_factor
      decay_factor=0.1,         # 'step': the multiplier at each decay epoch
      # Rates a step decay divides: 'all' (Caffe) or 'weights' (the cuda-convnet
      # README: "change all the epsW to one tenth"; biases keep their rate).
      decay_scope='all',
      warmup_epochs=0.0,        # linear warmup (any schedule)
      label_smoothing=0.0,      # 0 = plain cross-entropy
  ))


def _testing_fields() -> ml_collections.ConfigDict:
  """config.testing: TEST-ONLY fault injection (tests/test_reliability.py); the defaults change nothing."""
  return ml_collections.ConfigDict(dict(
      # After each of these steps print 'TESTING: paused after step N' and
      # SIGSTOP this process, so a test can SIGKILL it there or let it go on
      # with SIGCONT. Earlier checkpoints are then on disk; one this step
      # started is still being written (a kill mid-save).
      pause_at_steps=(),
      # Where the accelerator check (nin_jax/runtime/accelerators.py) looks for /dev
      # and /proc: tests point it at a fake tree to simulate TPU/GPU hardware.
      hardware_root='/',
      inject_nan_at_step=0,     # >0: this step's loss is multiplied by NaN
  ))


# Fields a run may change when it resumes from a checkpoint: they change how
# long it trains, the learning rate from here on, what it logs and keeps, or
# how a step is executed, never what one step is (batch, data, order, model).
# Every other field is fixed by the run's first launch; changing it needs
# --allow_config_change. A new field belongs here only if that holds for it.
# This is the one list: the resume check (nin_jax/train/run_history.py) reads it.
RESUME_SAFE_FIELDS = (
    'num_epochs', 'max_steps', 'eval_batch_size', 'eval_every_epochs',
    'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'write_plots',
    'testing.*',
    'dataset.data_dir', 'dataset.idx_dir', 'dataset.cache_dir', 'dataset.test_subset',
    # Execution only: the same steps up to float32 rounding (tests/test_dispatch.py).
    'steps_per_dispatch', 'dataset.on_device', 'dataset.workers', 'model.conv_impl',
    'optim.learning_rate', 'optim.schedule', 'optim.decay_epochs', 'optim.decay_factor',
    'optim.warmup_epochs', 'optim.momentum', 'optim.nesterov', 'optim.weight_decay',
    'optim.bias_lr_mult', 'optim.last_layer_lr_mult', 'optim.last_layer_bias_lr_mult',
    'optim.decay_scope', 'optim.label_smoothing',
)


def resume_safe(field: str) -> bool:
  """Whether `field` (dotted, e.g. 'optim.learning_rate') may change on resume."""
  return any(field == f or (f.endswith('.*') and field.startswith(f[:-1]))
             for f in RESUME_SAFE_FIELDS)


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.lock()
  return config


def eval_batch_size(config) -> int:
  return config.eval_batch_size or config.optim.batch_size


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for any nonsensical value."""
  _check_known_fields(config, base_config())
  check = functools.partial(_check, config)
  _validate_dataset(config.dataset, config.augment, check)
  _validate_model(config.model, check)
  _validate_optim(config.optim, check)
  _validate_run(config, check)


def _check(config, ok: bool, field: str, why: str) -> None:
  if not ok:
    raise ValueError(f'config.{field}={_get(config, field)!r}: {why}')


def _validate_dataset(d, augment, check) -> None:
  check(d.name in datasets.DATASETS, 'dataset.name',
        f'unknown dataset; choose one of {sorted(datasets.DATASETS)}')
  check(d.source in ('tfds', 'idx'), 'dataset.source', "choose 'tfds' or 'idx'")
  for field in ('on_device', 'validation_per_class_train', 'train_subset', 'test_subset'):
    # The stream reads whole splits: these would be ignored, so they are refused.
    check(not (d[field] and d.name in datasets.STREAMED), f'dataset.{field}',
          f'{d.name} is streamed; only in-memory datasets take it')
  check(d.preprocessing in preprocess.PREPROCESSINGS, 'dataset.preprocessing',
        f'choose one of {preprocess.PREPROCESSINGS}')
  check(d.imagenet_mean in IMAGENET_MEANS, 'dataset.imagenet_mean',
        f'choose one of {IMAGENET_MEANS}')
  check(not d.train_extra or 'extra' in datasets.DATASETS[d.name].splits,
        'dataset.train_extra', f'{d.name} has no extra split')
  check(d.validation_per_class_train >= 0 and d.validation_per_class_extra >= 0,
        'dataset.validation_per_class_train', 'must be >= 0')
  check(d.train_extra or not d.validation_per_class_extra,
        'dataset.validation_per_class_extra', 'needs dataset.train_extra')
  check(d.workers >= -1, 'dataset.workers', 'must be >= -1 (-1 = one per core)')
  check(d.train_subset >= 0 and d.test_subset >= 0, 'dataset.train_subset',
        'subset sizes must be >= 0')
  check(augment.translate >= 0, 'augment.translate', 'must be >= 0 pixels')


def _validate_model(m, check) -> None:
  check(m.preset in architectures.PRESETS, 'model.preset',
        f'unknown preset; choose one of {sorted(architectures.PRESETS)}')
  check(m.width_multiplier > 0, 'model.width_multiplier', 'must be positive')
  check(m.head in architectures.HEADS, 'model.head', f'choose one of {architectures.HEADS}')
  check(m.init in architectures.INITS, 'model.init', f'choose one of {architectures.INITS}')
  check(m.dtype in DTYPES, 'model.dtype', f'choose one of {DTYPES}')
  check(m.conv_impl in architectures.CONV_IMPLS, 'model.conv_impl',
        f'choose one of {architectures.CONV_IMPLS}')
  check(0.0 <= m.dropout_rate < 1.0, 'model.dropout_rate', 'must be in [0, 1)')
  check(m.dropout_form in architectures.DROPOUT_FORMS, 'model.dropout_form',
        f'choose one of {architectures.DROPOUT_FORMS}')
  check(0.0 <= m.fc_dropout < 1.0, 'model.fc_dropout', 'must be in [0, 1)')
  check(all(int(w) > 0 for w in m.fc_hidden), 'model.fc_hidden',
        'hidden widths must be positive')


def _validate_optim(o, check) -> None:
  check(o.batch_size > 0, 'optim.batch_size', 'must be positive')
  check(o.learning_rate > 0, 'optim.learning_rate', 'must be positive')
  check(o.reference_batch_size >= 0, 'optim.reference_batch_size', 'must be >= 0')
  check(0.0 <= o.momentum < 1.0, 'optim.momentum', 'must be in [0, 1)')
  check(o.weight_decay >= 0, 'optim.weight_decay', 'must be >= 0')
  check(o.bias_lr_mult >= 0 and o.last_layer_lr_mult >= 0, 'optim.bias_lr_mult',
        'multipliers must be >= 0')
  check(o.schedule in SCHEDULES, 'optim.schedule', f'choose one of {SCHEDULES}')
  check(list(o.decay_epochs) == sorted(o.decay_epochs), 'optim.decay_epochs',
        'must be increasing')
  check(o.decay_scope in DECAY_SCOPES, 'optim.decay_scope',
        f'choose one of {DECAY_SCOPES}')
  check(o.decay_scope == 'all' or o.schedule == 'step', 'optim.decay_scope',
        "'weights' applies to the step schedule only")
  check(0.0 < o.decay_factor <= 1.0, 'optim.decay_factor', 'must be in (0, 1]')
  check(o.warmup_epochs >= 0, 'optim.warmup_epochs', 'must be >= 0')
  check(0.0 <= o.label_smoothing < 1.0, 'optim.label_smoothing', 'must be in [0, 1)')


def _validate_run(config, check) -> None:
  """The run's length, intervals and the test-only fields."""
  check(config.num_epochs > 0, 'num_epochs', 'must be positive')
  check(config.steps_per_dispatch >= 0, 'steps_per_dispatch', 'must be >= 0 (0 = auto)')
  check(config.max_steps >= 0, 'max_steps', 'must be >= 0 (0 = no limit)')
  check(config.eval_batch_size >= 0, 'eval_batch_size', 'must be >= 0')
  check(config.eval_every_epochs > 0, 'eval_every_epochs', 'must be positive')
  check(config.log_every_steps > 0, 'log_every_steps', 'must be positive')
  check(config.checkpoint_every_steps > 0, 'checkpoint_every_steps', 'must be positive')
  check(config.keep_checkpoints >= 1, 'keep_checkpoints', 'must be >= 1')
  check(config.testing.inject_nan_at_step >= 0, 'testing.inject_nan_at_step',
        'must be >= 0 (0 = off)')
  check(all(int(s) > 0 for s in config.testing.pause_at_steps),
        'testing.pause_at_steps', 'steps must be positive')
  check(os.path.isdir(config.testing.hardware_root), 'testing.hardware_root',
        'must be an existing directory')


def _check_known_fields(config, schema, prefix: str = '') -> None:
  """A key the schema lacks (a typo in a config file) is an error naming the nearest one.

  The command line refuses unknown keys itself; a config file can add them
  to the (unlocked) dict it builds, so they are checked against the schema.
  """
  for key, value in config.items():
    if key not in schema:
      near = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f'; did you mean {prefix}{near[0]}?' if near else ''
      raise ValueError(f'config.{prefix}{key} is not a config field{hint} '
                       '(set in the config file?)')
    if isinstance(schema[key], ml_collections.ConfigDict):
      _check_known_fields(value, schema[key], f'{prefix}{key}.')


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config
