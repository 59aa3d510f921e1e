"""The Caffe Model Zoo converter, on synthetic .caffemodel files written from random NINs."""

import numpy as np
import pytest
from flax import nnx

import caffe_writer
from nin_jax.research import caffe_zoo
from nin_jax.train import config as config_lib
from nin_jax.train import train_step


def _model_config(preset, width=0.25):
  m = config_lib.base_config().model
  m.preset, m.width_multiplier = preset, width
  return m


def _random_model(preset, num_classes, input_shape, seed):
  model = train_step.build_model(_model_config(preset), num_classes, input_shape, seed=seed)
  # Random biases too, so a bias mix-up changes the logits.
  params = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(seed)
  pure = nnx.to_pure_dict(params)
  for block in pure['blocks'].values():
    for layer in block['layers'].values():
      layer['bias'] = rng.normal(0, 0.1, layer['bias'].shape).astype(np.float32)
  nnx.replace_by_pure_dict(params, pure)
  nnx.update(model, params)
  return model, pure


@pytest.mark.parametrize('zoo_name,legacy', [('cifar10', False), ('cifar10', True),
                                             ('imagenet', False)])
def test_round_trip_gives_the_same_logits(tmp_path, zoo_name, legacy):
  zoo = caffe_zoo.ZOO[zoo_name]
  shape = (32, 32, 3) if zoo_name == 'cifar10' else (224, 224, 3)
  classes = 10 if zoo_name == 'cifar10' else 1000
  model, params = _random_model(zoo.preset, classes, shape, seed=1)
  path = tmp_path / 'nin.caffemodel'
  path.write_bytes(caffe_writer.net(params, bgr=zoo.bgr_input, legacy=legacy))

  converted, loaded = caffe_zoo.convert(str(path), zoo_name, _model_config(zoo.preset))

  images = np.random.default_rng(0).normal(0, 1, (2, *shape)).astype(np.float32)
  diff = np.abs(np.asarray(loaded(images)) - np.asarray(model(images))).max()
  print(f'{zoo_name} legacy={legacy}: max logit difference {diff:.3g}')
  assert diff < 1e-5
  k = np.asarray(converted['blocks'][0]['layers'][0]['kernel'])
  np.testing.assert_array_equal(k, np.asarray(params['blocks'][0]['layers'][0]['kernel']))


def test_conv1_takes_rgb_when_caffe_took_bgr(tmp_path):
  """The file's conv1 applied to BGR pixels equals the converted conv1 on RGB pixels."""
  _, params = _random_model('cifar10_caffe', 10, (32, 32, 3), seed=2)
  (_, weight, _), *_ = caffe_writer.caffe_layers(params, bgr=True)
  path = tmp_path / 'nin.caffemodel'
  path.write_bytes(caffe_writer.net(params, bgr=True))
  layers = caffe_zoo.read_net(str(path))
  template = params
  converted = caffe_zoo.to_params(layers, template, bgr_input=True, preset='cifar10_caffe')
  patch_rgb = np.random.default_rng(3).normal(size=(5, 5, 3)).astype(np.float32)
  caffe_out = np.einsum('ocyx,cyx->o', weight, patch_rgb[:, :, ::-1].transpose(2, 0, 1))
  ours = np.einsum('yxco,yxc->o', converted['blocks'][0]['layers'][0]['kernel'], patch_rgb)
  np.testing.assert_allclose(ours, caffe_out, rtol=1e-5, atol=1e-5)


def test_truncated_file_is_refused(tmp_path):
  _, params = _random_model('cifar10_caffe', 10, (32, 32, 3), seed=0)
  data = caffe_writer.net(params, bgr=False)
  path = tmp_path / 'cut.caffemodel'
  path.write_bytes(data[:len(data) * 2 // 3])
  with pytest.raises(caffe_zoo.CaffeModelError, match='truncated'):
    caffe_zoo.convert(str(path), 'cifar10', _model_config('cifar10_caffe'))


def test_wrong_architecture_is_refused(tmp_path):
  _, params = _random_model('cifar10_caffe', 10, (32, 32, 3), seed=0)
  path = tmp_path / 'cifar.caffemodel'
  path.write_bytes(caffe_writer.net(params, bgr=False))
  # Same layer count, other widths: the full-width preset.
  with pytest.raises(caffe_zoo.CaffeModelError,
                     match=r'layer conv1 has weights \(48, 3, 5, 5\).*needs \(192, 3, 5, 5\)'):
    caffe_zoo.convert(str(path), 'cifar10', _model_config('cifar10_caffe', 1.0))
  # Another network: 9 layers with weights where the ImageNet NIN has 12.
  with pytest.raises(caffe_zoo.CaffeModelError, match='9 layers with weights.*imagenet preset has 12'):
    caffe_zoo.convert(str(path), 'imagenet', _model_config('imagenet'))


def test_not_a_caffemodel_is_refused(tmp_path):
  path = tmp_path / 'x.caffemodel'
  path.write_bytes(b'\x00\x01hello')
  with pytest.raises(caffe_zoo.CaffeModelError):
    caffe_zoo.read_net(str(path))


def test_mean_binaryproto_is_read_as_rgb(tmp_path):
  mean_bgr = np.random.default_rng(0).uniform(0, 255, (1, 3, 4, 5)).astype(np.float32)
  path = tmp_path / 'mean.binaryproto'
  path.write_bytes(caffe_writer.blob(mean_bgr, legacy_dims=True))
  np.testing.assert_array_equal(caffe_zoo.read_mean(str(path)),
                                mean_bgr[0, ::-1].transpose(1, 2, 0))


def test_eval_pretrained_converts_and_predicts_on_image_files(tmp_path):
  """No ImageNet here: the script converts the file and predicts on the images given."""
  import subprocess
  import sys
  from PIL import Image
  from conftest import REPO
  model, params = _random_model('imagenet', 1000, (224, 224, 3), seed=4)
  (tmp_path / 'nin.caffemodel').write_bytes(caffe_writer.net(params, bgr=True))
  pixels = np.random.default_rng(5).integers(0, 256, (256, 256, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / 'a.png')
  result = subprocess.run(
      [sys.executable, f'{REPO}/experiments/eval_pretrained.py',
       f'--caffemodel={tmp_path / "nin.caffemodel"}', f'--workdir={tmp_path / "zoo"}',
       f'--data_dir={tmp_path / "no_data"}', '--width_multiplier=0.25', str(tmp_path / 'a.png')],
      capture_output=True, text=True, timeout=600, cwd=REPO,
      env={**__import__('os').environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr == ''  # No library logs (Orbax's save and load at INFO) around it.
  line = [l for l in result.stdout.splitlines() if l.startswith(str(tmp_path / 'a.png'))][0]
  # The zoo's input: RGB in [0, 255] minus Caffe's mean pixel; the 256² image is cropped to 224.
  x = pixels[16:240, 16:240].astype(np.float32) - np.float32(caffe_zoo.IMAGENET_MEAN_RGB)
  probs = np.asarray(__import__('jax').nn.softmax(model(x[None]), -1))[0]
  best = int(np.argmax(probs))
  from nin_jax.train import predict
  name = predict.class_names('imagenet2012', 1000)[best]
  assert name.startswith('n') and line.split(': ')[1].startswith(f'{name} {probs[best]:.3f}')


def test_converted_imagenet_model_evaluates_on_the_validation_split(tmp_path):
  """The path eval_pretrained.py takes when ImageNet is prepared (mock TFDS data here)."""
  import tensorflow_datasets as tfds
  from nin_jax.data import imagenet_input
  from nin_jax.train import predict
  model, params = _random_model('imagenet', 1000, (224, 224, 3), seed=6)
  path = tmp_path / 'nin.caffemodel'
  path.write_bytes(caffe_writer.net(params, bgr=True))
  _, converted = caffe_zoo.convert(str(path), 'imagenet', _model_config('imagenet'))
  with tfds.testing.mock_data(num_examples=6):
    data = imagenet_input.ImageNetData(None, crop=224)
    result = predict.evaluate(converted, data, batch_size=4)
    images = data.device_input(next(data.eval_batches(4)))
  assert result['images'] == 6 and 0 <= result['top1'] <= result['top5'] <= 1
  # Scored by the converted model: the same top-1 as the original on these inputs.
  assert (np.argmax(np.asarray(converted(images)), -1)
          == np.argmax(np.asarray(model(images)), -1)).all()


# Which length-delimited fields hold a message, by the message they are in.
_MESSAGES = {'net': {100: 'layer'}, 'layer': {7: 'blob'}, 'blob': {7: 'shape'}, 'shape': {}}


def _structure_offsets(buf: bytes, start: int, end: int, message: str = 'net') -> list[int]:
  """Offsets of every field key and length of a LayerParameter-format net (no float data)."""
  def varint(pos):
    result = shift = 0
    while True:
      result, pos, shift = result | (buf[pos] & 0x7F) << shift, pos + 1, shift + 7
      if not buf[pos - 1] & 0x80:
        return result, pos
  out, pos = [], start
  while pos < end:
    key_start = pos
    key, pos = varint(pos)
    number, wire = key >> 3, key & 7
    if wire == 2:
      size, body = varint(pos)
      out += range(key_start, body)
      if number in _MESSAGES[message]:
        out += _structure_offsets(buf, body, body + size, _MESSAGES[message][number])
      pos = body + size
    else:
      out += range(key_start, pos)
      pos = varint(pos)[1] if wire == 0 else pos + (8 if wire == 1 else 4)
  return out


def test_a_damaged_file_is_read_or_refused_never_a_crash():
  """One byte of the file's structure (a field key or length) changed, 2,000 times."""
  _, params = _random_model('cifar10_caffe', 10, (32, 32, 3), seed=0)
  data = caffe_writer.net(params, bgr=False)
  offsets = _structure_offsets(data, 0, len(data))
  rng = np.random.default_rng(1)
  outcomes = {'read': 0, 'refused': 0}
  for _ in range(2000):
    damaged = bytearray(data)
    damaged[offsets[rng.integers(len(offsets))]] = rng.integers(256)
    try:
      caffe_zoo.to_params(caffe_zoo.parse_net(bytes(damaged)), params, bgr_input=False,
                          preset='cifar10_caffe')
      outcomes['read'] += 1
    except caffe_zoo.CaffeModelError:
      outcomes['refused'] += 1
  print(outcomes)  # Any other exception (AttributeError, TypeError...) fails the test.
  assert outcomes['refused'] and outcomes['read']


@pytest.mark.parametrize('layer, message', [
    (caffe_writer.bytes_field(1, b'relu9') + caffe_writer.int_field(2, 18),
     'the type of layer relu9 is stored as a varint'),
    (caffe_writer.int_field(1, 7) + caffe_writer.bytes_field(2, b'ReLU'),
     'the name of an unnamed layer is stored as a varint'),
    (caffe_writer.bytes_field(1, b'conv9') + caffe_writer.int_field(7, 3),
     'a blob of layer conv9 is stored as a varint'),
    (caffe_writer.bytes_field(1, b'conv9') + caffe_writer.bytes_field(
        7, caffe_writer.int_field(5, 1)),
     'layer conv9: blob field 5 is stored as a varint'),
    (caffe_writer.bytes_field(1, b'conv9') + caffe_writer.bytes_field(
        7, caffe_writer.int_field(7, 1)),
     'layer conv9: blob field 7 is stored as a varint'),
    (caffe_writer.bytes_field(1, b'conv9') + caffe_writer.bytes_field(
        7, caffe_writer.blob(np.array([1.0, np.nan, -np.inf], np.float32))),
     'layer conv9: a blob of shape (3,) holds 2 NaN or Inf values: a damaged file'),
])
def test_a_field_in_the_wrong_wire_type_or_a_non_finite_weight_is_refused(layer, message):
  with pytest.raises(caffe_zoo.CaffeModelError) as error:
    caffe_zoo.parse_net(caffe_writer.bytes_field(100, layer))
  assert str(error.value).startswith(message), str(error.value)
