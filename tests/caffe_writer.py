"""Writes Caffe `.caffemodel` files in the protobuf wire format, for tests only.

Independent of nin_jax.research.caffe_zoo's reader: the blobs are laid out here from a
nin_jax model's parameters the way Caffe stores them (out, in, kh, kw; BGR
input channels for conv1), so a round trip exercises the reader's transposes.
"""


import numpy as np


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _key(number: int, wire: int) -> bytes:
  return _varint(number << 3 | wire)


def bytes_field(number: int, payload: bytes) -> bytes:
  return _key(number, 2) + _varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
  return _key(number, 0) + _varint(value)


def blob(array: np.ndarray, *, legacy_dims: bool = False) -> bytes:
  """A BlobProto: packed float data, with `shape` (new) or num/channels/height/width."""
  array = np.asarray(array, np.float32)
  if legacy_dims:
    dims = (1,) * (4 - array.ndim) + array.shape
    head = b''.join(int_field(n, d) for n, d in zip((1, 2, 3, 4), dims))
  else:
    packed = b''.join(_varint(d) for d in array.shape)
    head = bytes_field(7, bytes_field(1, packed))
  return head + bytes_field(5, array.astype('<f4').tobytes())


def caffe_layers(params: dict, *, bgr: bool):
  """(name, weight (out,in,kh,kw), bias) of each convolution of a NIN's params."""
  out, n_conv, n_cccp = [], 0, 0
  for b in sorted(params['blocks']):
    layers = params['blocks'][b]['layers']
    for j in sorted(layers):
      kernel = np.asarray(layers[j]['kernel'])  # (kh, kw, in, out)
      kh, kw, cin, cout = kernel.shape
      weight = np.empty((cout, cin, kh, kw), np.float32)
      for o in range(cout):
        for c in range(cin):
          src = cin - 1 - c if (bgr and not out) else c
          weight[o, c] = kernel[:, :, src, o]
      if j == 0:
        n_conv += 1
        name = f'conv{n_conv}'
      else:
        n_cccp += 1
        name = f'cccp{n_cccp}'
      out.append((name, weight, np.asarray(layers[j]['bias'])))
  return out


def net(params: dict, *, bgr: bool, legacy: bool = False) -> bytes:
  """A NetParameter: each convolution followed by a ReLU (no blobs), like the zoo's."""
  msg = bytes_field(1, b'NIN')
  for name, weight, bias in caffe_layers(params, bgr=bgr):
    if legacy:  # V1LayerParameter in `layers` (2): name 4, type enum 5, blobs 6
      conv = (bytes_field(4, name.encode()) + int_field(5, 4)
              + bytes_field(6, blob(weight, legacy_dims=True))
              + bytes_field(6, blob(bias.reshape(1, 1, 1, -1), legacy_dims=True)))
      relu = bytes_field(4, f'relu_{name}'.encode()) + int_field(5, 18)
      msg += bytes_field(2, conv) + bytes_field(2, relu)
    else:  # LayerParameter in `layer` (100): name 1, type 2, blobs 7
      conv = (bytes_field(1, name.encode()) + bytes_field(2, b'Convolution')
              + bytes_field(7, blob(weight)) + bytes_field(7, blob(bias)))
      relu = bytes_field(1, f'relu_{name}'.encode()) + bytes_field(2, b'ReLU')
      msg += bytes_field(100, conv) + bytes_field(100, relu)
  return msg
