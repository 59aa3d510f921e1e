"""Class maps (the paper's figure 4): what the last mlpconv layer sees, per class.

With the GAP head, the last mlpconv layer makes one map per class and the
logit of a class is its map's average, so the maps show where in the image
the evidence for each class lies. For a trained run's checkpoint this renders,
for a few test images, the image and the maps of its top-k predicted classes.
"""

from __future__ import annotations

import json
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from nin_jax import checkpoint, datasets, input_pipeline, steps, storage

CLASS_NAMES = {
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                      'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
    'mnist': tuple(str(i) for i in range(10)),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                'ship', 'truck'),
    'svhn_cropped': tuple(str(i) for i in range(10)),
}


def class_names(dataset: str, num_classes: int) -> tuple[str, ...]:
  return CLASS_NAMES.get(dataset, tuple(f'class {i}' for i in range(num_classes)))


def load_config(workdir) -> ml_collections.ConfigDict:
  path = storage.workdir_path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is {workdir} the workdir of a run?')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


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


def load_model(workdir: str, step: int | None = None):
  """(model, config, step): the run's NIN with the checkpoint's weights, in eval use."""
  config = load_config(workdir)
  info = datasets.DATASETS[config.dataset.name]
  model = steps.build_model(config.model, info.num_classes, info.image_shape,
                            seed=config.seed)
  restored = checkpoint.load_for_inspection(workdir, step)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params_dict = _like(nnx.to_pure_dict(params), restored['params'])
  rest_dict = _like(nnx.to_pure_dict(rest), restored['batch_stats'])
  nnx.replace_by_pure_dict(params, params_dict)
  nnx.replace_by_pure_dict(rest, rest_dict)
  return nnx.merge(graphdef, params, rest), config, int(restored['step'])


def compute(model, images: np.ndarray, top_k: int = 3) -> dict[str, np.ndarray]:
  """Class maps, logits, probabilities and the top-k classes of each image.

  Returns:
    maps (N,h,w,C): model.class_maps(images), the maps GAP averages;
    logits, probs (N,C); top (N,k) class ids, most probable first.
  """
  images = jnp.asarray(images)
  maps = np.asarray(model.class_maps(images))
  logits = np.asarray(model(images, train=False))
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  top = np.argsort(-logits, axis=-1, kind='stable')[:, :top_k]
  return {'maps': maps, 'logits': logits, 'probs': probs, 'top': top}


def render(display_images: np.ndarray, labels: np.ndarray, result: dict, names: Sequence[str],
           png_path: str, *, title: str = '') -> str:
  """A grid: each row an image, then the maps of its top-k classes (one colour scale a row)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n, k = result['top'].shape
  fig, axes = plt.subplots(n, k + 1, figsize=(1.9 * (k + 1), 2.0 * n + 0.4), squeeze=False)
  for i in range(n):
    img = display_images[i]
    gray = img.shape[-1] == 1
    axes[i, 0].imshow(img[..., 0] if gray else img, cmap='gray' if gray else None)
    axes[i, 0].set_title(f'true: {names[labels[i]]}', fontsize=8)
    row_max = max(float(result['maps'][i].max()), 1e-6)
    for j, c in enumerate(result['top'][i]):
      ax = axes[i, j + 1]
      ax.imshow(result['maps'][i, :, :, c], cmap='viridis', vmin=0.0, vmax=row_max,
                interpolation='nearest')
      ax.set_title(f'{names[c]} {result["probs"][i, c]:.2f}', fontsize=8,
                   color='green' if c == labels[i] else 'black')
    for ax in axes[i]:
      ax.set_xticks([])
      ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  storage.save_figure(fig, epath.Path(png_path), dpi=100)
  plt.close(fig)
  return png_path


def load_test_images(config, indices: Sequence[int]):
  """(model input, displayable image in [0,1], label) of test images by index.

  The model input is preprocessed as in training (statistics fitted on the
  run's training images), so the whole test split is loaded, not the subset.
  """
  dataset = ml_collections.ConfigDict(config.dataset.to_dict())
  dataset.test_subset = 0
  data = input_pipeline.load(dataset)
  raw, labels = datasets.load_arrays(
      dataset.name, 'test', source=dataset.source, data_dir=dataset.data_dir or None,
      idx_dir=dataset.idx_dir or None)
  indices = np.asarray(indices)
  if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
    raise ValueError(f'image indices must be in [0, {len(labels)})')
  return (data.test_images[indices], raw[indices].astype(np.float32) / 255.0,
          np.asarray(labels)[indices])


def make_figure(workdir: str, png_path: str | None = None, *, indices: Sequence[int] = (0, 1, 2, 3),
                top_k: int = 3, step: int | None = None) -> tuple[str, dict]:
  """Renders workdir's class maps to png_path (default workdir/class_maps.png).

  Returns (png path, compute()'s result plus 'indices' and 'labels').
  """
  workdir = storage.workdir_path(workdir)
  model, config, step = load_model(workdir, step)
  names = class_names(config.dataset.name, model.spec.num_classes)
  if not 1 <= top_k <= len(names):
    raise ValueError(f'top_k must be in [1, {len(names)}], got {top_k}')
  inputs, display, labels = load_test_images(config, indices)
  result = compute(model, inputs, top_k)
  result.update(indices=np.asarray(indices), labels=labels)
  png_path = png_path or str(workdir / 'class_maps.png')
  title = (f'{workdir.name} (step {step}, head {config.model.head}): last mlpconv '
           f'maps {result["maps"].shape[1]}x{result["maps"].shape[2]} of the top-{top_k} classes')
  render(display, labels, result, names, png_path, title=title)
  return png_path, result
