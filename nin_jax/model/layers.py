"""The layers of a Network-in-Network: convolutions, pooling, dropout.

A 1×1 convolution is a per-pixel linear map across channels, so it is written
as a matmul over the channel axis: on XLA:CPU a 1×1 `conv` trains about 3×
slower (its weight gradient is pathological there).

The k×k convolution has three formulations, equal up to float rounding:
  'conv'     lax.conv for every layer (1×1 included): the naive baseline;
  'matmul'   lax.conv for k×k, matmul for 1×1;
  'patches'  k×k as im2col from k² shifted slices then one matmul, 1×1 as
             matmul (fastest on XLA:CPU while it sent convolutions to
             YNNPACK; see xla_cpu.py);
  'auto'     the fastest measured: 'matmul' on CPU (with xla_cpu.py's
             flags); 'matmul' is also the usual formulation on GPU and TPU.
Two gradients are reformulated on CPU only, with the same values:
  - the max-pool gradient is built from window slices instead of XLA's
    select-and-scatter, which XLA:CPU runs several times slower
    (`_max_pool_slice_grad`);
  - a channel matmul's weight gradient (a contraction over every pixel of the
    batch into a small C×D matrix) is summed from a few chunks of the batch
    (`channel_matmul`), which XLA:CPU's GEMM runs faster.
Elsewhere XLA's own gradients are used.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nin_jax.model import architectures
from nin_jax.model.architectures import CONV_IMPLS, DROPOUT_FORMS, INITS

ConvImpl = Literal['auto', 'conv', 'matmul', 'patches']
Init = Literal['paper', 'he']


def resolve_conv_impl(conv_impl: str) -> str:
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {conv_impl!r}; choose one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    return 'matmul'
  return conv_impl


def kernel_init(init: str, std: float):
  if init == 'paper':
    return jax.nn.initializers.normal(std)
  if init == 'he':
    return jax.nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
  raise ValueError(f'unknown init {init!r}; choose one of {INITS}')


def _extract_patches(x, k: int, stride: int, padding: int):
  """im2col: (N,H,W,C) → (N,Ho,Wo,k*k*C), ordered (kh, kw, c) like an HWIO kernel."""
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  _, h, w, _ = x.shape
  ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
  slices = [
      x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
      for i in range(k) for j in range(k)
  ]
  return jnp.concatenate(slices, axis=-1)


@flax.struct.dataclass
class DropoutRate:
  """A dropout rate held as runtime values: one compiled step serves trials of any rate.

  Made on the host (`of`) with the arithmetic of a float rate, so a step given
  DropoutRate.of(p) draws the same masks and scales as one compiled with p.
  """
  keep_bits: jax.Array  # uint32: a unit is kept where its PRNG word is below this
  keep: jax.Array       # float32: 1 − rate

  @classmethod
  def of(cls, rate: float) -> 'DropoutRate':
    return cls(keep_bits=np.uint32(_keep_bits(1.0 - rate)), keep=np.float32(1.0 - rate))


def _keep_bits(keep: float) -> int:
  return min(round(keep * 2**32), 2**32 - 1)


def dropout(x, rate: float | DropoutRate, key, form: str = 'inverted'):
  """Training-time dropout: zero each element with probability `rate`.

  form='inverted' scales the survivors by 1 / (1 − rate); 'cuda_convnet'
  leaves them as they are (see architectures.DROPOUT_FORMS). The mask compares raw 32-bit
  PRNG words with keep·2³², so the rate is exact to 2⁻³² and a mask costs one
  comparison. Drawn for the global shape, it is the same on any number of
  devices (threefry is partitionable).
  """
  _check_dropout_form(form)
  if isinstance(rate, DropoutRate):
    keep_bits, keep = jnp.asarray(rate.keep_bits, jnp.uint32), rate.keep
  elif rate == 0.0:
    return x
  else:
    keep = 1.0 - rate
    keep_bits = jnp.uint32(_keep_bits(keep))
  bits = jax.random.bits(key, x.shape, jnp.uint32)
  mask = bits < keep_bits
  kept = x / jnp.asarray(keep, x.dtype) if form == 'inverted' else x
  return jnp.where(mask, kept, jnp.zeros((), x.dtype))


def dropout_at_test(x, rate: float | DropoutRate, form: str = 'inverted'):
  """What a dropout layer does outside training: identity, or × (1 − rate) for cuda-convnet."""
  _check_dropout_form(form)
  if form == 'inverted':
    return x
  if isinstance(rate, DropoutRate):
    return x * jnp.asarray(rate.keep, x.dtype)
  if rate == 0.0:
    return x
  return x * jnp.asarray(1.0 - rate, x.dtype)


def dropout_layer(x, rate: float | DropoutRate, *, train: bool, key, form: str):
  """A dropout layer in training (`dropout`) or at test (`dropout_at_test`)."""
  return dropout(x, rate, key, form) if train else dropout_at_test(x, rate, form)


def _check_dropout_form(form: str):
  if form not in DROPOUT_FORMS:
    raise ValueError(f'unknown dropout form {form!r}; choose one of {DROPOUT_FORMS}')


# Chunks for a channel matmul's weight gradient on CPU. Measured on NIN-CIFAR
# (2-core Xeon): 1 chunk 126–129 img/s, 2: 136–138, 4: 137–140, 8: 137–139.
CPU_WEIGHT_GRAD_CHUNKS = 4


def channel_matmul(x, kernel, weight_grad_chunks: int = 1):
  """x (..., C) @ kernel (C, D): a 1×1 convolution, or im2col patches times a kernel.

  weight_grad_chunks > 1: the weight gradient Σ_pixels xᵀ·dy is computed as a
  batched matmul over that many chunks of the pixels, then summed (chunks that
  do not divide the pixel count are reduced to a divisor). As one contraction
  with a huge inner dimension and a tiny output, XLA:CPU first copies dy
  transposed, then runs slowly: NIN-CIFAR's first cccp layer (131072 pixels,
  192→160) took 62 ms as one contraction, 48 ms in 2–8 chunks.
  """
  if weight_grad_chunks == 1:
    return jnp.einsum('...c,cd->...d', x, kernel)
  return _chunked_weight_grad_matmul(x, kernel, weight_grad_chunks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _chunked_weight_grad_matmul(x, kernel, chunks):
  return channel_matmul(x, kernel)


def _chunked_weight_grad_matmul_fwd(x, kernel, chunks):
  return channel_matmul(x, kernel), (x, kernel)


def _chunked_weight_grad_matmul_bwd(chunks, residuals, dy):
  x, kernel = residuals
  dx = jnp.einsum('...d,cd->...c', dy, kernel)
  (c, d), rows = kernel.shape, math.prod(x.shape[:-1])
  chunks = math.gcd(chunks, rows)
  # A batched matmul, then the sum: contracting g and m together would be
  # merged back into the one slow contraction. The partial sums stay float32
  # under bfloat16 compute.
  dkernel = jnp.einsum('gmc,gmd->gcd', x.reshape(chunks, rows // chunks, c),
                       dy.reshape(chunks, rows // chunks, d),
                       preferred_element_type=jnp.float32).sum(0)
  return dx, dkernel.astype(kernel.dtype)


_chunked_weight_grad_matmul.defvjp(_chunked_weight_grad_matmul_fwd,
                                   _chunked_weight_grad_matmul_bwd)


class ConvLayer(nnx.Module):
  """One convolution (k×k, or 1×1 as a channel matmul), optional batch norm, ReLU."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int, *,
               stride: int = 1, padding: int = 0, init: str = 'paper',
               init_std: float = architectures.PAPER_INIT_STD,
               batch_norm: bool = False, conv_impl: str = 'matmul',
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
    self.conv_impl = resolve_conv_impl(conv_impl)
    self.weight_grad_chunks = CPU_WEIGHT_GRAD_CHUNKS if jax.default_backend() == 'cpu' else 1
    self.dtype = dtype
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(kernel_init(init, init_std)(rngs.params(), shape))
    # Batch norm's shift makes a bias redundant.
    self.bias = None if batch_norm else nnx.Param(jnp.zeros((out_features,)))
    self.norm = (nnx.BatchNorm(out_features, momentum=0.9, epsilon=1e-5,
                               dtype=dtype, rngs=rngs) if batch_norm else None)

  def __call__(self, x, *, train: bool):
    kernel = self.kernel[...].astype(self.dtype)
    x = x.astype(self.dtype)
    k = self.kernel_size
    pointwise = k == 1 and self.stride == 1 and self.padding == 0
    if pointwise and self.conv_impl != 'conv':
      y = channel_matmul(x, kernel[0, 0], self.weight_grad_chunks)
    elif self.conv_impl == 'patches':
      patches = _extract_patches(x, k, self.stride, self.padding)
      y = channel_matmul(patches, kernel.reshape(-1, kernel.shape[-1]),
                         self.weight_grad_chunks)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, (self.stride,) * 2, [(self.padding,) * 2] * 2,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if self.norm is not None:
      y = self.norm(y, use_running_average=not train)
    return jax.nn.relu(y)


class LocalLayer(nnx.Module):
  """A locally connected k×k layer (cuda-convnet's 'local'), ReLU after it.

  Like a stride-1 convolution, but every output pixel has its own kernel:
  im2col patches times a (Ho, Wo, k²·C, D) kernel. Biases are shared per
  output map. Used by the conventional CNN of the paper's section 4.6.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int, *,
               input_hw: tuple[int, int], padding: int = 0, init: str = 'paper',
               init_std: float = architectures.PAPER_INIT_STD, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.kernel_size, self.padding, self.dtype = kernel_size, padding, dtype
    ho, wo = (n + 2 * padding - kernel_size + 1 for n in input_hw)
    shape = (ho, wo, kernel_size * kernel_size * in_features, out_features)
    initializer = (jax.nn.initializers.variance_scaling(
        2.0, 'fan_in', 'normal', in_axis=-2, out_axis=-1, batch_axis=(0, 1))
        if init == 'he' else kernel_init(init, init_std))
    self.kernel = nnx.Param(initializer(rngs.params(), shape))
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x, *, train: bool):
    del train
    patches = _extract_patches(x.astype(self.dtype), self.kernel_size, 1, self.padding)
    y = jnp.einsum('nhwp,hwpd->nhwd', patches, self.kernel[...].astype(self.dtype))
    return jax.nn.relu(y + self.bias[...].astype(self.dtype))


def pool_output_size(size: int, window: int, stride: int) -> int:
  """Caffe / cuda-convnet pooling: the output size rounds up."""
  out = -(-(size - window) // stride) + 1
  # Caffe drops a last window that would start past the input.
  if (out - 1) * stride >= size:
    out -= 1
  return out


def _pool_padding(x, window: int, stride: int):
  """Output size and the (N,H,W,C) end padding that makes every window whole."""
  _, h, w, _ = x.shape
  ho, wo = pool_output_size(h, window, stride), pool_output_size(w, window, stride)
  return ho, wo, ((0, 0), (0, (ho - 1) * stride + window - h),
                  (0, (wo - 1) * stride + window - w), (0, 0))


def _max_pool(x, window: int, stride: int):
  _, _, padding = _pool_padding(x, window, stride)
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                               (1, stride, stride, 1), padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_slice_grad(x, window: int, stride: int):
  """Max pooling whose gradient is built from the k² strided window slices.

  Same values and gradient as reduce_window's (each output's gradient goes to
  the first maximum of its window, row-major: tested equal, ties included),
  but as fused elementwise ops instead of select-and-scatter, which XLA:CPU
  runs about 4× slower (NIN-CIFAR: 105 → 120 img/s on the development CPU).
  """
  return _max_pool(x, window, stride)


def _max_pool_slice_grad_fwd(x, window, stride):
  # Pad once here and keep the padded input for the taps of the backward pass.
  _, _, padding = _pool_padding(x, window, stride)
  xp = jnp.pad(x, padding, constant_values=-jnp.inf)
  y = jax.lax.reduce_window(xp, -jnp.inf, jax.lax.max, (1, window, window, 1),
                            (1, stride, stride, 1), 'VALID')
  return y, (xp, y, x.shape)


def _max_pool_slice_grad_bwd(window, stride, residuals, dy):
  xp, y, x_shape = residuals
  ho, wo = y.shape[1:3]
  zero = jnp.zeros((), dy.dtype)
  # Route each output's gradient to the first maximum among its k² taps.
  unclaimed = jnp.ones(y.shape, bool)
  shares = {}
  for i in range(window):
    for j in range(window):
      tap = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
      claims = unclaimed & (tap == y)
      unclaimed = unclaimed & ~claims
      shares[i, j] = jnp.where(claims, dy, zero)
  # Input row s·a + r receives tap i ≡ r (mod s) of output row a - i // s: sum
  # the shifted shares per residue class (plain edge padding, no strided
  # scatter), then interleave the s² classes back into rows and columns.
  hq, wq = ho - 1 + -(-window // stride), wo - 1 + -(-window // stride)
  classes = []
  for r in range(stride):
    row = []
    for c in range(stride):
      total = jnp.zeros((dy.shape[0], hq, wq, dy.shape[3]), dy.dtype)
      for (i, j), share in shares.items():
        if i % stride == r and j % stride == c:
          di, dj = i // stride, j // stride
          total = total + jnp.pad(share, ((0, 0), (di, hq - ho - di), (dj, wq - wo - dj), (0, 0)))
      row.append(total)
    classes.append(jnp.stack(row, axis=3))  # (N, hq, wq, s, C)
  dxp = jnp.stack(classes, axis=2)  # (N, hq, s, wq, s, C)
  dxp = dxp.reshape(dy.shape[0], hq * stride, wq * stride, dy.shape[3])
  return (dxp[:, :x_shape[1], :x_shape[2], :],)


_max_pool_slice_grad.defvjp(_max_pool_slice_grad_fwd, _max_pool_slice_grad_bwd)


def pool2d(x, kind: str, window: int, stride: int, *, slice_grad: bool = False):
  """Max or average pooling with round-up output size (windows clipped at the edge).

  slice_grad: take the max-pool gradient from window slices (see
  `_max_pool_slice_grad`); the values and gradients are the same.
  """
  if kind == 'max':
    return (_max_pool_slice_grad(x, window, stride) if slice_grad
            else _max_pool(x, window, stride))
  if kind == 'avg':
    ho, wo, padding = _pool_padding(x, window, stride)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, window, window, 1),
                                  (1, stride, stride, 1), padding)
    # Caffe averages over the part of the window inside the image.
    def counts(n, no):
      starts = np.arange(no) * stride
      return np.minimum(starts + window, n) - starts
    count = np.outer(counts(x.shape[1], ho), counts(x.shape[2], wo)).astype(np.float32)
    return total / jnp.asarray(count, x.dtype)[None, :, :, None]
  raise ValueError(f'unknown pool {kind!r}; choose max or avg')
