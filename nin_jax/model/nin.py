"""Network-in-Network in Flax NNX: mlpconv blocks, GAP and FC heads.

An mlpconv block is one k×k convolution followed by 1×1 "cccp" layers, ReLU
after each (the layers and their CPU formulations are in nin_jax/model/layers.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from nin_jax.model import architectures
from nin_jax.model.architectures import HEADS
# Re-exported: callers name the layers through nin_jax.model.nin.
from nin_jax.model.layers import (CONV_IMPLS, CPU_WEIGHT_GRAD_CHUNKS, INITS,  # noqa: F401
                            DROPOUT_FORMS, ConvImpl, ConvLayer, Init, LocalLayer,
                            DropoutRate, channel_matmul, dropout, dropout_at_test,
                            dropout_layer, kernel_init, pool2d, pool_output_size,
                            resolve_conv_impl)


ROLE_WEIGHT, ROLE_BIAS, ROLE_LAST_WEIGHT, ROLE_LAST_BIAS, ROLE_NORM = (
    'weight', 'bias', 'last_weight', 'last_bias', 'norm')


class MLPConv(nnx.Module):
  """One k×k convolution then 1×1 "cccp" layers, ReLU after each."""

  def __init__(self, in_features: int, features: Sequence[int], kernel_size: int,
               *, stride: int = 1, padding: int = 0,
               init_stds: Sequence[float] | None = None, init: str = 'paper',
               batch_norm: bool = False, conv_impl: str = 'matmul',
               local_input_hw: tuple[int, int] | None = None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    """local_input_hw: the input's H, W when the k×k layer is locally connected."""
    init_stds = init_stds or (architectures.PAPER_INIT_STD,) * len(features)
    layers = []
    for i, (out_features, std) in enumerate(zip(features, init_stds)):
      spatial = i == 0
      if spatial and local_input_hw is not None:
        layers.append(LocalLayer(in_features, out_features, kernel_size,
                                 input_hw=local_input_hw, padding=padding, init=init,
                                 init_std=std, dtype=dtype, rngs=rngs))
      else:
        layers.append(ConvLayer(
            in_features, out_features, kernel_size if spatial else 1,
            stride=stride if spatial else 1, padding=padding if spatial else 0,
            init=init, init_std=std, batch_norm=batch_norm, conv_impl=conv_impl,
            dtype=dtype, rngs=rngs))
      in_features = out_features
    self.layers = nnx.List(layers)

  def __call__(self, x, *, train: bool, taps: list | None = None, name: str = ''):
    for i, layer in enumerate(self.layers):
      x = layer(x, train=train)
      if taps is not None:
        taps.append((f'{name}.{"conv" if i == 0 else f"cccp{i}"}', x.shape))
    return x


class FCHead(nnx.Module):
  """The ablation's head: flatten → hidden Dense+ReLU (+dropout) → logits."""

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *,
               dropout_rate: float, dropout_form: str = 'inverted', init: str,
               dtype, rngs: nnx.Rngs):
    widths = (in_features, *hidden, num_classes)
    self.kernels = nnx.List([
        nnx.Param(kernel_init(init, architectures.PAPER_INIT_STD)(rngs.params(), (a, b)))
        for a, b in zip(widths[:-1], widths[1:])])
    self.biases = nnx.List([nnx.Param(jnp.zeros((b,))) for b in widths[1:]])
    self.dropout_rate = dropout_rate
    self.dropout_form = dropout_form
    self.dtype = dtype

  def __call__(self, x, *, train: bool, dropout_key=None):
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    n = len(self.kernels)
    for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
      # Dropout on each Dense layer's input (the flattened maps, then hidden units).
      if self.dropout_rate > 0:
        x = dropout_layer(x, self.dropout_rate, train=train, form=self.dropout_form,
                          key=jax.random.fold_in(dropout_key, 1000 + i) if train else None)
      x = x @ kernel[...].astype(self.dtype) + bias[...].astype(self.dtype)
      if i < n - 1:
        x = jax.nn.relu(x)
    return x


class NIN(nnx.Module):
  """A Network-in-Network assembled from a `presets.NINSpec`.

  head='gap': the last mlpconv layer makes one map per class and global average
  pooling turns maps into logits (the paper). head='fc': the same maps are
  flattened into fully connected layers (the paper's section 4.6 ablation).
  dropout_form: 'cuda_convnet' (the authors' CIFAR/SVHN/MNIST runs: no rescale
  in training, × (1 − p) at test) or 'inverted' (Caffe); see architectures.DROPOUT_FORMS.
  """

  def __init__(self, spec: architectures.NINSpec, *, input_shape=None,
               head: str = 'gap', fc_hidden: Sequence[int] = (),
               fc_dropout: float = 0.0, dropout_rate: float = 0.5,
               dropout_form: str = 'inverted',
               batch_norm: bool = False, init: str = 'paper',
               conv_impl: str = 'auto', dtype=jnp.float32, rngs: nnx.Rngs):
    if head not in HEADS:
      raise ValueError(f'unknown head {head!r}; choose one of {HEADS}')
    if dropout_form not in DROPOUT_FORMS:
      raise ValueError(f'unknown dropout form {dropout_form!r}; choose one of {DROPOUT_FORMS}')
    self.spec = spec
    self.input_shape = tuple(input_shape or spec.input_shape)
    self.dtype = dtype
    h, w, channels = self.input_shape
    blocks = []
    for b in spec.blocks:
      blocks.append(MLPConv(channels, b.features, b.kernel_size, stride=b.stride,
                            padding=b.padding, init_stds=b.layer_init_stds(),
                            init=init, batch_norm=batch_norm,
                            conv_impl=conv_impl,
                            local_input_hw=(h, w) if b.local else None,
                            dtype=dtype, rngs=rngs))
      channels = b.features[-1]
      h = (h + 2 * b.padding - b.kernel_size) // b.stride + 1
      w = (w + 2 * b.padding - b.kernel_size) // b.stride + 1
      if h < 1 or w < 1:
        raise ValueError(f'input {self.input_shape} is too small for {spec.name}:'
                         f' a {b.kernel_size}×{b.kernel_size} convolution has no output')
      if b.pool != 'none':
        if min(h, w) < b.pool_size:
          raise ValueError(
              f'input {self.input_shape} is too small for {spec.name}: a'
              f' {b.pool_size}×{b.pool_size} pool meets a {h}×{w} map')
        h, w = pool_output_size(h, b.pool_size, b.pool_stride), pool_output_size(
            w, b.pool_size, b.pool_stride)
    self.blocks = nnx.List(blocks)
    self.pool_slice_grad = jax.default_backend() == 'cpu'
    self.final_map_shape = (h, w, channels)
    self.dropout_rate = dropout_rate
    self.dropout_form = dropout_form
    self.head = head
    self.fc = (FCHead(h * w * channels, tuple(fc_hidden), spec.num_classes,
                      dropout_rate=fc_dropout, dropout_form=dropout_form,
                      init=init, dtype=dtype, rngs=rngs)
               if head == 'fc' else None)

  def __call__(self, x, *, train: bool = False, dropout_key=None,
               taps: list | None = None, dropout_rate: DropoutRate | None = None):
    """Logits (float32) for images x (N,H,W,C).

    Args:
      train: batch statistics and dropout on.
      dropout_key: PRNG key for every dropout mask of this call (needed when
        train and any dropout is active).
      dropout_rate: the blocks' dropout rate as runtime values, in place of
        the module's own (which still says whether there is dropout at all).
      taps: if a list, (layer name, output shape) pairs are appended to it.
    """
    if train and dropout_key is None and self._has_dropout():
      raise ValueError('train=True with dropout needs a dropout_key')
    if not jnp.issubdtype(x.dtype, jnp.floating):  # Raw pixels would train silently wrong.
      raise TypeError(f'NIN takes preprocessed float images, not {x.dtype}: raw pixels '
                      "(ImageNet's uint8 crops) go through the data's device_input first")
    for i, (block, b) in enumerate(zip(self.blocks, self.spec.blocks)):
      x = block(x, train=train, taps=taps, name=f'block{i + 1}')
      if b.pool != 'none':
        x = pool2d(x, b.pool, b.pool_size, b.pool_stride,
                   slice_grad=self.pool_slice_grad)
        if taps is not None:
          taps.append((f'block{i + 1}.pool', x.shape))
      if b.dropout and self.dropout_rate > 0:
        rate = self.dropout_rate if dropout_rate is None else dropout_rate
        x = dropout_layer(x, rate, train=train, form=self.dropout_form,
                          key=jax.random.fold_in(dropout_key, i) if train else None)
    if self.fc is not None:
      logits = self.fc(x, train=train, dropout_key=dropout_key)
    else:
      logits = jnp.mean(x, axis=(1, 2))
    if taps is not None:
      taps.append(('logits', logits.shape))
    return logits.astype(jnp.float32)

  def class_maps(self, x):
    """The last mlpconv layer's maps (N,h,w,classes) that GAP averages (eval mode)."""
    for block, b in zip(self.blocks, self.spec.blocks):
      x = block(x, train=False)
      if b.pool != 'none':
        x = pool2d(x, b.pool, b.pool_size, b.pool_stride)
      if b.dropout and self.dropout_rate > 0:
        x = dropout_at_test(x, self.dropout_rate, self.dropout_form)
    return x.astype(jnp.float32)

  def _has_dropout(self) -> bool:
    return (self.dropout_rate > 0 and any(b.dropout for b in self.spec.blocks)) or (
        self.fc is not None and self.fc.dropout_rate > 0)

  def param_roles(self, params):
    """The role of each parameter (a pytree like `params`, a pure dict).

    The optimizer turns roles into learning-rate multipliers and decay masks:
    'weight', 'bias', 'last_weight' / 'last_bias' (the layer producing the
    logits, which the authors train at a tenth of the rate) and 'norm'.
    """
    if self.fc is not None:
      last = {('fc', 'kernels', len(self.fc.kernels) - 1),
              ('fc', 'biases', len(self.fc.biases) - 1)}
    else:
      b = len(self.blocks) - 1
      last = {('blocks', b, 'layers', len(self.blocks[b].layers) - 1)}

    def role(path, _):
      keys = tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in path)
      if 'norm' in keys:
        return ROLE_NORM
      is_bias = keys[-1] == 'bias' or 'biases' in keys
      is_last = keys[:3] in last or keys[:4] in last
      return (ROLE_LAST_BIAS if is_last else ROLE_BIAS) if is_bias else (
          ROLE_LAST_WEIGHT if is_last else ROLE_WEIGHT)
    return jax.tree_util.tree_map_with_path(role, params)


def macs_per_example(spec: architectures.NINSpec, input_shape=None, *,
                     head: str = 'gap', fc_hidden: Sequence[int] = ()) -> int:
  """Forward multiply-accumulates for one image (convolutions and Dense layers)."""
  h, w, cin = input_shape or spec.input_shape
  total = 0
  for b in spec.blocks:
    for i, cout in enumerate(b.features):
      if i == 0:
        k = b.kernel_size
        h = (h + 2 * b.padding - k) // b.stride + 1
        w = (w + 2 * b.padding - k) // b.stride + 1
        total += h * w * k * k * cin * cout
      else:
        total += h * w * cin * cout
      cin = cout
    if b.pool != 'none':
      h, w = (pool_output_size(h, b.pool_size, b.pool_stride),
              pool_output_size(w, b.pool_size, b.pool_stride))
  if head == 'fc':
    widths = (h * w * cin, *fc_hidden, spec.num_classes)
    total += sum(a * b for a, b in zip(widths[:-1], widths[1:]))
  return total


def train_flops_per_example(*args, **kwargs) -> int:
  """Training FLOPs per image: 2 FLOPs per MAC, backward ≈ 2× forward."""
  return 3 * 2 * macs_per_example(*args, **kwargs)


def count_params(model: nnx.Module) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
