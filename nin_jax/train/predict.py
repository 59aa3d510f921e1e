"""Predict from raw images with a trained run, and export it.

    predictor = nin_jax.train.predict.load('workdirs/cifar10')
    probs = predictor(uint8_images)        # (N, H, W, C) uint8 → (N, classes)

Everything inference needs is written beside the checkpoints at the start of
training (`write_inference_files`), so predicting needs no dataset access:

    <workdir>/inference/config.json         the run's config
    <workdir>/inference/preprocessing.npz   what the preprocessing fitted on the
                                            training split (whatever arrays it
                                            is: mean/std, the ZCA matrix and mean...)
    <workdir>/inference/class_names.json

At the end of training `export` writes `<workdir>/inference/model.jax_exported`,
a `jax.export`-serialised function from the preprocessed float32 batch (any
batch size) to class probabilities; it runs without nin_jax:

    exported = jax.export.deserialize(bytearray(open(path, 'rb').read()))
    probs = exported.call(predictor.preprocess(uint8_images))
"""

from __future__ import annotations

import json
import operator
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from nin_jax.runtime import checkpoint
from nin_jax.data import datasets
from nin_jax.data import input_pipeline
from nin_jax.train import train_step

INFERENCE_DIR = 'inference'
EXPORTED = 'model.jax_exported'

CLASS_NAMES = {
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                      'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
    'mnist': tuple(str(i) for i in range(10)),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                'ship', 'truck'),
    'svhn_cropped': tuple(str(i) for i in range(10)),
}


def class_names(dataset: str, num_classes: int) -> tuple[str, ...]:
  if dataset == 'imagenet2012' and num_classes == 1000:
    return _imagenet_wnids() or tuple(f'class {i}' for i in range(num_classes))
  return CLASS_NAMES.get(dataset, tuple(f'class {i}' for i in range(num_classes)))


def _imagenet_wnids() -> tuple[str, ...] | None:
  """ImageNet's WordNet ids in label order (TFDS ships them; Caffe's order is the same)."""
  import importlib.util
  spec = importlib.util.find_spec('tensorflow_datasets')
  if spec is None or not spec.submodule_search_locations:
    return None
  path = epath.Path(spec.submodule_search_locations[0]) / 'datasets/imagenet2012/labels.txt'
  return tuple(path.read_text().split()) if path.exists() else None


def inference_dir(workdir) -> epath.Path:
  return epath.Path(workdir) / INFERENCE_DIR


def write_inference_files(workdir, config: ml_collections.ConfigDict,
                          fitted: dict[str, np.ndarray], names: Sequence[str]) -> None:
  """The config, fitted preprocessing statistics and class names, for `load`."""
  directory = inference_dir(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / 'config.json').write_text(config.to_json_best_effort(indent=2))
  (directory / 'class_names.json').write_text(json.dumps(list(names), indent=1))
  with (directory / 'preprocessing.npz').open('wb') as f:
    np.savez(f, **{k: np.asarray(v) for k, v in fitted.items()})


def load_config(workdir) -> ml_collections.ConfigDict:
  for path in (inference_dir(workdir) / 'config.json', epath.Path(workdir) / 'config.json'):
    if path.exists():
      return ml_collections.ConfigDict(json.loads(path.read_text()))
  raise FileNotFoundError(f'{epath.Path(workdir) / "config.json"} not found: is {workdir} '
                          'the workdir of a run?')


def _like(template, restored, path=()):
  """`restored` rearranged as `template`'s nested dict.

  Orbax gives back dict keys as strings ('0'), while the model's pure dicts key
  list entries by int (0); match each template key by itself or its str().
  """
  if isinstance(template, dict):
    out = {}
    for k, v in template.items():
      key = k if k in restored else str(k)
      if key not in restored:
        raise checkpoint.CheckpointError(
            f'checkpoint has no {"/".join(map(str, path + (k,)))}: it was saved by a '
            'different model than config.json describes')
      out[k] = _like(v, restored[key], path + (k,))
    return out
  if tuple(np.shape(restored)) != tuple(np.shape(template)):
    raise checkpoint.CheckpointError(
        f'checkpoint {"/".join(map(str, path))} has shape {np.shape(restored)}, '
        f'the model {np.shape(template)}')
  return jnp.asarray(restored)


def input_shape(config) -> tuple[int, int, int]:
  info = datasets.DATASETS[config.dataset.name]
  if config.dataset.name in datasets.STREAMED:
    return (config.dataset.image_size, config.dataset.image_size, info.image_shape[2])
  return info.image_shape


def load_model(workdir, step: int | None = None):
  """(model, config, step): the run's NIN with the checkpoint's weights, in eval use."""
  config = load_config(workdir)
  info = datasets.DATASETS[config.dataset.name]
  model = train_step.build_model(config.model, info.num_classes, input_shape(config),
                            seed=config.seed)
  restored = checkpoint.load_for_inspection(str(workdir), step)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  nnx.replace_by_pure_dict(params, _like(nnx.to_pure_dict(params), restored['params']))
  nnx.replace_by_pure_dict(rest, _like(nnx.to_pure_dict(rest), restored['batch_stats']))
  return nnx.merge(graphdef, params, rest), config, int(restored['step'])


class Predictor:
  """uint8 images → class probabilities, for one trained run."""

  def __init__(self, model, config, fitted: dict[str, np.ndarray],
               names: Sequence[str], step: int):
    self.model, self.config, self.fitted = model, config, fitted
    self.class_names, self.step = tuple(names), step
    self.input_shape = tuple(model.input_shape)
    graphdef, state = nnx.split(model)
    self._probs = jax.jit(lambda x: jax.nn.softmax(nnx.merge(graphdef, state)(x), -1))

  def preprocess(self, images: np.ndarray) -> np.ndarray:
    """uint8 images → the model's float32 input (N, H, W, C), as in training.

    Takes a batch (N, H, W, C) or one image (H, W, C); a single-channel model
    also takes them without the channel axis: (N, H, W), the IDX layout, or (H, W).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise ValueError(f'predict takes uint8 images, got {images.dtype}')
    return input_pipeline.apply_preprocessing(self.config.dataset, self.fitted,
                                              self._as_batch(images))

  def _as_batch(self, images: np.ndarray) -> np.ndarray:
    h, w, c = self.input_shape
    image_shapes = [(h, w, c)] + ([(h, w)] if c == 1 else [])
    if images.shape in image_shapes:
      return images.reshape(1, h, w, c)
    if images.shape[1:] in image_shapes:
      return images.reshape(len(images), h, w, c)
    takes = f'a batch (N, {h}, {w}, {c}) or one ({h}, {w}, {c})'
    if c == 1:
      takes += f', or without the channel axis, (N, {h}, {w}) or ({h}, {w})'
    raise ValueError(f'images of shape {images.shape}; this model takes {self.input_shape} '
                     f'images: {takes}')

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return np.asarray(self._probs(self.preprocess(images)))


def load(workdir, step: int | None = None) -> Predictor:
  """The run's newest (or `step`) checkpoint as a `Predictor`; reads no dataset."""
  load_config(workdir)  # A missing config.json says "not a run".
  directory = inference_dir(workdir)
  if not (directory / 'preprocessing.npz').exists():
    raise FileNotFoundError(f'{directory / "preprocessing.npz"} not found: the run in '
                            f'{workdir} predates saved inference files')
  model, config, step = load_model(workdir, step)
  with (directory / 'preprocessing.npz').open('rb') as f:
    with np.load(f, allow_pickle=False) as npz:
      fitted = {k: np.array(npz[k]) for k in npz.files}
  names = json.loads((directory / 'class_names.json').read_text())
  return Predictor(model, config, fitted, names, step)


def evaluate(model, data, batch_size: int) -> dict[str, float]:
  """Top-1 and top-5 accuracy of `model` on data's test split (one process)."""
  # ImageNet's batches are uint8 crops: the data says how the device makes the input.
  model_input = data.device_input or operator.itemgetter('image')
  logits_fn = jax.jit(lambda batch: model(model_input(batch)))
  hits1 = hits5 = count = 0
  for batch in data.eval_batches(batch_size):
    top5 = np.argsort(-np.asarray(logits_fn(batch)), -1)[:, :5]
    valid = batch['mask'] > 0
    hits1 += int(np.sum((top5[:, 0] == batch['label']) & valid))
    hits5 += int(np.sum(np.any(top5 == batch['label'][:, None], -1) & valid))
    count += int(valid.sum())
  return {'top1': hits1 / count, 'top5': hits5 / count, 'images': count}


def export(workdir, model) -> epath.Path:
  """Serialises model input → probabilities with jax.export (batch size symbolic)."""
  graphdef, state = nnx.split(model)

  def probabilities(x):
    return jax.nn.softmax(nnx.merge(graphdef, state)(x), axis=-1)

  h, w, c = model.input_shape
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'b, {h}, {w}, {c}'), jnp.float32)
  exported = jax.export.export(jax.jit(probabilities))(spec)
  path = inference_dir(workdir) / EXPORTED
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(exported.serialize())
  return path


def load_exported(path):
  """The function `export` wrote: call it with preprocessed float32 images."""
  return jax.export.deserialize(bytearray(epath.Path(path).read_bytes()))
