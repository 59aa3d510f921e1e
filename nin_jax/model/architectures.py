"""The paper's networks as data.

Every preset is the authors' network, layer for layer (see
../shared/reference/nin-facts.md): the cuda-convnet CIFAR-10 definition, its
CIFAR-100 / SVHN / MNIST siblings and the 4-block ImageNet model from the Caffe
Model Zoo. Models are built from these specs by `nin_jax.model.nin.NIN`; nothing
here knows about training.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

PoolType = Literal['max', 'avg', 'none']

# cuda-convnet initialised every layer from N(0, 0.05^2).
PAPER_INIT_STD = 0.05

# The choices of config.model's fields besides the preset, named here (no jax)
# so that the config schema can check them; nin.py and layers.py implement them.
HEADS = ('gap', 'fc')  # global average pooling (the paper) | fully connected layers
INITS = ('paper', 'he')  # each layer's N(0, std) of the preset | He (fan-in) normal
CONV_IMPLS = ('auto', 'conv', 'matmul', 'patches')  # see layers.py
# How a framework scales dropout. 'inverted' (Caffe): training keeps a unit
# with probability 1 − p and scales it by 1 / (1 − p); test is the identity.
# 'cuda_convnet' (the authors' DropoutNeuron): training zeroes units without
# rescaling the survivors; test multiplies every unit by 1 − p. Both have the
# same expectation, but the next layer sees inputs (1 − p)× as large under
# cuda-convnet's form, so with the same init and rate they train differently.
DROPOUT_FORMS = ('inverted', 'cuda_convnet')


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One mlpconv block and what follows it.

  Attributes:
    features: output channels of the k×k convolution, then of each 1×1 "cccp"
      layer, in order.
    kernel_size: k of the first (spatial) convolution.
    stride: stride of the first convolution.
    padding: symmetric zero padding of the first convolution.
    pool: pooling after the block ('none' for the last block, whose maps go to
      the head).
    pool_size, pool_stride: pooling window; the output size rounds up, as in
      cuda-convnet and Caffe.
    dropout: whether dropout follows the (pooled) block.
    init_stds: Gaussian init std per layer (len == len(features)); used by the
      'paper' init only.
    local: the k×k layer is locally connected (unshared weights), as the last
      layer of the conventional CNN (`cifar10_cnn`).
  """
  features: tuple[int, ...]
  kernel_size: int
  stride: int = 1
  padding: int = 0
  pool: PoolType = 'none'
  pool_size: int = 3
  pool_stride: int = 2
  dropout: bool = False
  init_stds: tuple[float, ...] | None = None
  local: bool = False

  def __post_init__(self):
    if not self.features:
      raise ValueError('an mlpconv block needs at least its k×k convolution')
    if self.init_stds is not None and len(self.init_stds) != len(self.features):
      raise ValueError(
          f'init_stds has {len(self.init_stds)} entries for'
          f' {len(self.features)} layers')

  def layer_init_stds(self) -> tuple[float, ...]:
    return self.init_stds or (PAPER_INIT_STD,) * len(self.features)


@dataclasses.dataclass(frozen=True)
class NINSpec:
  """A whole network: mlpconv blocks then a global-average-pooling head."""
  name: str
  input_shape: tuple[int, int, int]  # H, W, C
  num_classes: int
  blocks: tuple[BlockSpec, ...]

  def __post_init__(self):
    if self.blocks[-1].features[-1] != self.num_classes:
      raise ValueError(
          f'{self.name}: the last 1×1 layer must produce one map per class'
          f' ({self.num_classes}), got {self.blocks[-1].features[-1]}')


def _three_block(name, input_shape, num_classes, widths, kernels,
                 pool2='max', init_stds=(None, None, None)) -> NINSpec:
  """The CIFAR/SVHN/MNIST family: 3 blocks, two 3×3/2 pools with dropout."""
  k1, k2, k3 = kernels
  return NINSpec(
      name=name, input_shape=input_shape, num_classes=num_classes,
      blocks=(
          BlockSpec(widths[0], k1, padding=k1 // 2, pool='max', dropout=True,
                    init_stds=init_stds[0]),
          BlockSpec(widths[1], k2, padding=k2 // 2, pool=pool2, dropout=True,
                    init_stds=init_stds[1]),
          BlockSpec(widths[2], k3, padding=k3 // 2, init_stds=init_stds[2]),
      ))


def cifar10(pool2: PoolType = 'max') -> NINSpec:
  """cuda-convnet NIN for CIFAR-10 (966,986 params); pool2='avg' is the Caffe zoo variant."""
  return _three_block(
      'cifar10' if pool2 == 'max' else 'cifar10_caffe', (32, 32, 3), 10,
      ((192, 160, 96), (192, 192, 192), (192, 192, 10)), (5, 5, 3), pool2=pool2)


def cifar100() -> NINSpec:
  """CIFAR-10's network with 100 class maps (984,356 params).

  Init as the authors' NIN/cifar-100_def: std 0.001 for conv1, 0.01 for cccp1
  and cccp2 (the 1×1 layers of block 1), 0.05 for every other layer.
  """
  return _three_block(
      'cifar100', (32, 32, 3), 100,
      ((192, 160, 96), (192, 192, 192), (192, 192, 100)), (5, 5, 3),
      init_stds=((0.001, 0.01, 0.01), (0.05, 0.05, 0.05), (0.05, 0.05, 0.05)))


def svhn() -> NINSpec:
  """SVHN NIN (1,986,026 params)."""
  return _three_block(
      'svhn', (32, 32, 3), 10,
      ((128, 96, 64), (320, 256, 128), (384, 256, 10)), (5, 5, 5))


def mnist() -> NINSpec:
  """MNIST NIN for 28×28×1 inputs (349,674 params); also Fashion-MNIST."""
  return _three_block(
      'mnist', (28, 28, 1), 10,
      ((96, 64, 48), (128, 96, 48), (128, 96, 10)), (5, 5, 5))


def imagenet() -> NINSpec:
  """The Caffe Model Zoo ImageNet NIN: 4 blocks, 7,595,176 params.

  224 → 54 → 27 → 13 → 6 → 1 (227 gives 55 → 27 → 13 → 6 → 1). Init std 0.01
  for conv1, conv3 and cccp8, 0.05 elsewhere (unconfirmed per layer).
  """
  return NINSpec(
      name='imagenet', input_shape=(224, 224, 3), num_classes=1000,
      blocks=(
          BlockSpec((96, 96, 96), 11, stride=4, padding=0, pool='max',
                    init_stds=(0.01, 0.05, 0.05)),
          BlockSpec((256, 256, 256), 5, padding=2, pool='max'),
          BlockSpec((384, 384, 384), 3, padding=1, pool='max', dropout=True,
                    init_stds=(0.01, 0.05, 0.05)),
          BlockSpec((1024, 1024, 1000), 3, padding=1,
                    init_stds=(0.05, 0.05, 0.01)),
      ))


def cifar10_cnn() -> NINSpec:
  """The conventional CNN of the paper's section 4.6 (after Hinton et al. 2012).

  From the paper: three convolutional layers, then one locally connected
  layer whose 16 maps are cut to 10 (one per class) so that GAP can replace
  its FC (+ dropout) head; FC 17.56%, FC + dropout 15.99%, GAP 16.46% test
  error on CIFAR-10. INFERRED (the paper gives no sizes): 64 maps of 5×5 in
  each convolution (pad 2), each followed by a 3×3/2 max pool (32 → 16 → 8 →
  4), a 3×3 local layer (pad 1) making 4×4×10 maps, no response
  normalisation, no dropout inside the network, init std 0.05.
  """
  return NINSpec(
      name='cifar10_cnn', input_shape=(32, 32, 3), num_classes=10,
      blocks=(
          BlockSpec((64,), 5, padding=2, pool='max'),
          BlockSpec((64,), 5, padding=2, pool='max'),
          BlockSpec((64,), 5, padding=2, pool='max'),
          BlockSpec((10,), 3, padding=1, local=True),
      ))


def with_classes(spec: NINSpec, num_classes: int) -> NINSpec:
  """The same network with `num_classes` maps in its last 1×1 layer."""
  last = spec.blocks[-1]
  blocks = spec.blocks[:-1] + (dataclasses.replace(
      last, features=last.features[:-1] + (num_classes,)),)
  return dataclasses.replace(spec, blocks=blocks, num_classes=num_classes)


def scaled(spec: NINSpec, width_multiplier: float) -> NINSpec:
  """Every layer's width × multiplier (at least 1), except the class maps.

  For fast experiments and tests; 1.0 is the paper's network.
  """
  if width_multiplier == 1.0:
    return spec
  def scale(block, keep_last):
    widths = [max(1, round(f * width_multiplier)) for f in block.features]
    if keep_last:
      widths[-1] = block.features[-1]
    return dataclasses.replace(block, features=tuple(widths))
  n = len(spec.blocks)
  return dataclasses.replace(
      spec, blocks=tuple(scale(b, i == n - 1) for i, b in enumerate(spec.blocks)))


PRESETS = {
    'cifar10': cifar10,
    'cifar10_caffe': lambda: cifar10(pool2='avg'),
    'cifar100': cifar100,
    'svhn': svhn,
    'mnist': mnist,
    'imagenet': imagenet,
    'cifar10_cnn': cifar10_cnn,
}


def get_preset(name: str) -> NINSpec:
  if name not in PRESETS:
    raise ValueError(
        f'unknown model preset {name!r}; choose one of {sorted(PRESETS)}')
  return PRESETS[name]()
