"""The Caffe Model Zoo's NIN models as nin_jax parameters.

    params = caffe_zoo.convert('nin_imagenet.caffemodel', 'imagenet')

A `.caffemodel` is a serialised `caffe.NetParameter` protocol buffer. It is
read here straight from the protobuf wire format (no caffe, no generated
caffe_pb2), using only the fields that carry weights (caffe.proto):

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter)
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  layer = 1 (V0LayerParameter), name = 4, type = 5 (enum), blobs = 6
    V0LayerParameter  name = 1, type = 2 (string), blobs = 50
    BlobProto         shape = 7 (BlobShape: dim = 1), data = 5 (packed float),
                      double_data = 8, num/channels/height/width = 1/2/3/4

Layers with blobs are matched to the preset's layers in network order (the
zoo names them conv1, cccp1, cccp2, conv2, ...). Each convolution's weight
blob is (out, in, kh, kw) and becomes an HWIO kernel; Caffe's ImageNet inputs
were BGR (OpenCV), so conv1's input channels are reversed to take RGB.

Inputs the converted ImageNet model expects: RGB pixels in [0, 255] minus
the training set's mean (the zoo subtracted a 256² mean image, `mean_file`;
`read_mean` reads such a `.binaryproto`, a BlobProto in the same format), with
no division. The zoo CIFAR-10 model was trained on pylearn2's GCN + ZCA
whitened CIFAR-10 (RGB), which `dataset.preprocessing='gcn_zca'` reproduces.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from nin_jax.data import datasets
from nin_jax.runtime import checkpoint
from nin_jax.train import config as config_lib
from nin_jax.train import predict
from nin_jax.train import train_step

# Caffe's ILSVRC-2012 mean pixel (the per-channel mean of ilsvrc_2012_mean.npy), RGB.
IMAGENET_MEAN_RGB = (122.6789143406786, 116.66876761696767, 104.0069879317889)


class CaffeModelError(ValueError):
  """A file that is not a readable Caffe model, or not the expected network."""


@dataclasses.dataclass(frozen=True)
class ZooModel:
  preset: str          # nin_jax preset with the same layers
  dataset: str         # what it was trained on
  bgr_input: bool      # conv1 was trained on BGR images
  preprocessing: str   # config.dataset.preprocessing that reproduces its input


ZOO = {
    # gist mavenlin/d802a5849de39225bcc6, 59.36% top-1 (centre crop).
    'imagenet': ZooModel('imagenet', 'imagenet2012', bgr_input=True, preprocessing='none'),
    # gist mavenlin/e56253735ef32c3c296d, 89.6% (average pool2).
    'cifar10': ZooModel('cifar10_caffe', 'cifar10', bgr_input=False, preprocessing='gcn_zca'),
}


@dataclasses.dataclass
class CaffeLayer:
  name: str
  type: str
  blobs: list[np.ndarray]


# ----------------------------------------------------------------------------
# Protobuf wire format
# ----------------------------------------------------------------------------

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {_VARINT: 'a varint', _FIXED64: '8 fixed bytes', _BYTES: 'length-delimited bytes',
               _FIXED32: '4 fixed bytes'}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(buf):
      raise CaffeModelError('file ends inside a varint: truncated or not a .caffemodel')
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      raise CaffeModelError('varint longer than 10 bytes: not a protobuf file')


def fields(buf: bytes):
  """(field number, wire type, value) of each field of one message, in order.

  The value is an int for varints, bytes for length-delimited and fixed-width
  fields.
  """
  pos, end = 0, len(buf)
  while pos < end:
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == _VARINT:
      value, pos = _varint(buf, pos)
    elif wire in (_FIXED64, _FIXED32, _BYTES):
      if wire == _BYTES:
        size, pos = _varint(buf, pos)
      else:
        size = 8 if wire == _FIXED64 else 4
      if pos + size > end:
        raise CaffeModelError(
            f'field {number} needs {size} bytes but only {end - pos} remain: '
            'the file is truncated')
      value, pos = bytes(buf[pos:pos + size]), pos + size
    else:
      raise CaffeModelError(f'wire type {wire} of field {number} is not protobuf: '
                            'not a .caffemodel')
    if number == 0:
      raise CaffeModelError('field number 0: not a protobuf file')
    yield number, wire, value


def _check_wire(wire: int, allowed: tuple[int, ...], what: str) -> None:
  """A known field must come in the wire type(s) caffe.proto gives it, else the file is damaged."""
  if wire not in allowed:
    raise CaffeModelError(f'{what} is stored as {_WIRE_NAMES[wire]}, where caffe.proto has '
                          f'{" or ".join(_WIRE_NAMES[w] for w in allowed)}: a damaged file')


def _repeated_ints(items) -> list[int]:
  """Packed (bytes) or unpacked (int) varints, as one list."""
  out = []
  for wire, value in items:
    if wire == _VARINT:
      out.append(value)
    else:
      pos = 0
      while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
  return out


def _repeated_floats(items, dtype) -> np.ndarray:
  """Packed or unpacked little-endian floats (float32 '<f4' or float64 '<f8')."""
  size = np.dtype(dtype).itemsize
  chunks = []
  for wire, value in items:
    if len(value) % size:
      raise CaffeModelError('packed float data of odd length: truncated file')
    chunks.append(np.frombuffer(value, dtype))
  return np.concatenate(chunks) if chunks else np.zeros((0,), dtype)


# BlobProto's fields that are read, with the wire types caffe.proto allows each
# (repeated numbers may be packed: length-delimited).
_BLOB_WIRES = {1: (_VARINT, _BYTES), 2: (_VARINT, _BYTES), 3: (_VARINT, _BYTES),
               4: (_VARINT, _BYTES), 5: (_BYTES, _FIXED32), 7: (_BYTES,), 8: (_BYTES, _FIXED64)}


def parse_blob(buf: bytes) -> np.ndarray:
  """A BlobProto as a float32 array of its shape (new `shape`, else num/channels/h/w).

  Raises CaffeModelError for a damaged blob, NaN or Inf values included.
  """
  by_field: dict[int, list] = {}
  for number, wire, value in fields(buf):
    if number in _BLOB_WIRES:
      _check_wire(wire, _BLOB_WIRES[number], f'blob field {number}')
    by_field.setdefault(number, []).append((wire, value))
  data = _repeated_floats(by_field.get(5, []), '<f4')
  if not data.size and 8 in by_field:
    data = _repeated_floats(by_field[8], '<f8')
  if 7 in by_field:
    dims = []
    for _, shape in by_field[7]:
      dim_fields = [(w, v) for n, w, v in fields(shape) if n == 1]
      for wire, _ in dim_fields:
        _check_wire(wire, (_VARINT, _BYTES), 'a blob shape dimension')
      dims = _repeated_ints(dim_fields)
  else:
    dims = [(_repeated_ints(by_field.get(n, [(0, 0)])) or [0])[-1] for n in (1, 2, 3, 4)]
  shape = tuple(int(d) for d in dims)
  if math.prod(shape) != data.size:
    raise CaffeModelError(f'a blob of shape {shape} holds {data.size} values: '
                          'truncated or damaged file')
  bad = int(np.sum(~np.isfinite(data)))
  if bad:
    raise CaffeModelError(f'a blob of shape {shape} holds {bad} NaN or Inf values: '
                          'a damaged file')
  return data.astype(np.float32).reshape(shape)


def _string(value: bytes) -> str:
  return value.decode('utf-8', errors='replace')


def _layer(buf: bytes, *, name_field: int, type_field: int, blobs_field: int,
           type_is_enum: bool = False) -> CaffeLayer:
  name, kind, blobs = '', '', []
  for number, wire, value in fields(buf):
    where = f'layer {name}' if name else 'an unnamed layer'
    if number == name_field:
      _check_wire(wire, (_BYTES,), f'the name of {where}')
      name = _string(value)
    elif number == type_field:
      _check_wire(wire, (_VARINT,) if type_is_enum else (_BYTES,), f'the type of {where}')
      kind = str(value) if type_is_enum else _string(value)
    elif number == blobs_field:
      _check_wire(wire, (_BYTES,), f'a blob of {where}')
      try:
        blobs.append(parse_blob(value))
      except CaffeModelError as e:
        raise CaffeModelError(f'{where}: {e}') from None
  return CaffeLayer(name, kind, blobs)


def parse_net(buf: bytes) -> list[CaffeLayer]:
  """Every layer of a serialised NetParameter (new `layer` or old `layers`), in order."""
  layers = []
  for number, wire, value in fields(buf):
    if number in (2, 100):
      _check_wire(wire, (_BYTES,), f'network field {number} (a layer)')
    if wire != _BYTES:
      continue
    if number == 100:  # LayerParameter
      layers.append(_layer(value, name_field=1, type_field=2, blobs_field=7))
    elif number == 2:  # V1LayerParameter, possibly wrapping a V0LayerParameter
      v0 = [v for n, w, v in fields(value) if n == 1 and w == _BYTES]
      if v0:
        layers.append(_layer(v0[0], name_field=1, type_field=2, blobs_field=50))
      else:
        layers.append(_layer(value, name_field=4, type_field=5, blobs_field=6,
                             type_is_enum=True))
  return layers


def read_net(path: str) -> list[CaffeLayer]:
  with open(path, 'rb') as f:
    buf = f.read()
  layers = parse_net(buf)
  if not any(layer.blobs for layer in layers):
    raise CaffeModelError(f'{path} holds no layers with weights: not a .caffemodel')
  return layers


def read_mean(path: str) -> np.ndarray:
  """A Caffe mean `.binaryproto` (1, 3, H, W) BGR → (H, W, 3) RGB float32."""
  with open(path, 'rb') as f:
    blob = parse_blob(f.read())
  blob = blob.reshape(blob.shape[-3:])
  if blob.shape[0] != 3:
    raise CaffeModelError(f'{path}: a mean blob of shape {blob.shape}, expected 3 channels')
  return np.ascontiguousarray(blob[::-1].transpose(1, 2, 0))


# ----------------------------------------------------------------------------
# Caffe layers → nin_jax parameters
# ----------------------------------------------------------------------------


def _preset_layers(params) -> list[tuple[str, dict]]:
  """(name, {'kernel', 'bias'}) of each convolution of a NIN's pure param dict, in order."""
  out = []
  blocks = params['blocks']
  for b in sorted(blocks):
    layers = blocks[b]['layers']
    for j in sorted(layers):
      out.append((f'block{b + 1}.{"conv" if j == 0 else f"cccp{j}"}', layers[j]))
  return out


def to_params(layers: list[CaffeLayer], template: dict, *, bgr_input: bool,
              preset: str) -> dict:
  """Caffe layers → a pure param dict shaped like `template` (a GAP NIN's params).

  Raises CaffeModelError naming the first layer whose count or shapes differ.
  """
  if 'fc' in template:
    raise CaffeModelError('zoo models have the GAP head; set model.head=gap')
  with_weights = [layer for layer in layers if layer.blobs]
  targets = _preset_layers(template)
  if len(with_weights) != len(targets):
    raise CaffeModelError(
        f'the file has {len(with_weights)} layers with weights '
        f'({", ".join(l.name for l in with_weights)}); the {preset} preset has '
        f'{len(targets)}: a different architecture')
  out = {'blocks': {}}
  for i, (layer, (name, target)) in enumerate(zip(with_weights, targets)):
    if 'bias' not in target or target['bias'] is None:
      raise CaffeModelError('zoo models have no batch norm; set model.batch_norm=False')
    if len(layer.blobs) != 2:
      raise CaffeModelError(f'layer {layer.name} has {len(layer.blobs)} blobs, '
                            'expected weights and bias')
    weight, bias = layer.blobs
    kh, kw, cin, cout = target['kernel'].shape
    if weight.size != cout * cin * kh * kw or weight.ndim < 2 or (
        weight.reshape(-1, *weight.shape[-3:]).shape != (cout, cin, kh, kw)):
      raise CaffeModelError(
          f'layer {layer.name} has weights {weight.shape}; the {preset} preset\'s '
          f'{name} needs {(cout, cin, kh, kw)} (out, in, kh, kw): a different architecture')
    if bias.size != cout:
      raise CaffeModelError(f'layer {layer.name} has {bias.size} biases; the {preset} '
                            f'preset\'s {name} needs {cout}')
    kernel = weight.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)
    if i == 0 and bgr_input:
      kernel = kernel[:, :, ::-1, :]  # BGR inputs → RGB inputs.
    b, j = name.split('.')
    block = out['blocks'].setdefault(int(b[len('block'):]) - 1, {'layers': {}})
    block['layers'][0 if j == 'conv' else int(j[len('cccp'):])] = {
        'kernel': np.ascontiguousarray(kernel, np.float32),
        'bias': bias.reshape(cout).astype(np.float32)}
  return out


def convert(path: str, zoo_name: str, model_config=None):
  """(params, model) of a zoo `.caffemodel` loaded into the `zoo_name` preset's NIN.

  model_config: config.model to build (default: the zoo's preset, GAP, no
  batch norm); its width must match the file.
  """
  if zoo_name not in ZOO:
    raise CaffeModelError(f'unknown zoo model {zoo_name!r}; choose one of {sorted(ZOO)}')
  zoo = ZOO[zoo_name]
  if model_config is None:
    model_config = ml_collections.ConfigDict(config_lib.base_config().model.to_dict())
    model_config.preset = zoo.preset
  info = datasets.DATASETS[zoo.dataset]
  model = train_step.build_model(model_config, info.num_classes, info.image_shape)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  template = nnx.to_pure_dict(params)
  converted = to_params(read_net(path), template, bgr_input=zoo.bgr_input,
                        preset=model_config.preset)
  nnx.replace_by_pure_dict(params, converted)
  return converted, nnx.merge(graphdef, params, rest)


def zoo_config(zoo_name: str, data_dir: str = ''):
  """The nin_jax config of a zoo model: its preset, dataset and input preprocessing."""
  zoo = ZOO[zoo_name]
  config = config_lib.base_config()
  config.dataset.name = zoo.dataset
  config.dataset.data_dir = data_dir
  config.dataset.preprocessing = zoo.preprocessing
  config.model.preset = zoo.preset
  if zoo.dataset == 'imagenet2012':
    config.optim.batch_size = 64
  return config


def write_workdir(workdir, config, model, fitted: dict[str, np.ndarray]) -> None:
  """A converted model as a run's workdir (step-0 checkpoint + inference files).

  `nin_jax.train.predict.load(workdir)` then predicts with it, and training with the
  same workdir fine-tunes it.
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  state, _ = train_step.create_train_state(config, model.spec.num_classes, model.input_shape, 1, 1)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  state = state.replace(params=jax.tree.map(jax.numpy.asarray, params))
  checkpointer = checkpoint.Checkpointer(os.fspath(workdir))
  checkpointer.save(0, state, force=True)
  checkpointer.close()
  predict.write_inference_files(workdir, config, fitted, predict.class_names(
      config.dataset.name, model.spec.num_classes))
