"""Class maps (the paper's figure 4): what the last mlpconv layer sees, per class.

With the GAP head, the last mlpconv layer makes one map per class and the
logit of a class is its map's average, so the maps show where in the image
the evidence for each class lies. For a trained run's checkpoint this renders,
for a few test images, the image and the maps of its top-k predicted classes.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from nin_jax.data import datasets
from nin_jax.train import predict
from nin_jax.runtime import storage

# The run's loader and names live in predict.py; kept here under their old names.
CLASS_NAMES, class_names = predict.CLASS_NAMES, predict.class_names
load_config, load_model = predict.load_config, predict.load_model


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
    fig.suptitle(title, fontsize=9, fontfamily=storage.font_family_for(title))
  fig.tight_layout()
  storage.save_figure(fig, epath.Path(png_path), dpi=100)
  plt.close(fig)
  return png_path


def load_test_images(predictor: predict.Predictor, indices: Sequence[int]):
  """(model input, displayable image in [0,1], label) of test images by index.

  The model input is preprocessed with the statistics the run saved
  (predict.py), so only these test images are read: nothing is refitted.
  """
  dataset = predictor.config.dataset
  raw, labels = datasets.load_arrays(
      dataset.name, 'test', source=dataset.source, data_dir=dataset.data_dir or None,
      idx_dir=dataset.idx_dir or None)
  indices = np.asarray(indices)
  if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
    raise ValueError(f'image indices must be in [0, {len(labels)})')
  raw = np.asarray(raw)[indices]
  return (predictor.preprocess(raw), raw.astype(np.float32) / 255.0,
          np.asarray(labels)[indices])


def make_figure(workdir: str, png_path: str | None = None, *, indices: Sequence[int] = (0, 1, 2, 3),
                top_k: int = 3, step: int | None = None) -> tuple[str, dict]:
  """Renders workdir's class maps to png_path (default workdir/class_maps.png).

  Returns (png path, compute()'s result plus 'indices' and 'labels').
  """
  workdir = storage.workdir_path(workdir)
  predictor = predict.load(workdir, step)
  model, config, step = predictor.model, predictor.config, predictor.step
  names = predictor.class_names
  if not 1 <= top_k <= len(names):
    raise ValueError(f'top_k must be in [1, {len(names)}], got {top_k}')
  inputs, display, labels = load_test_images(predictor, indices)
  result = compute(model, inputs, top_k)
  result.update(indices=np.asarray(indices), labels=labels)
  png_path = png_path or str(workdir / 'class_maps.png')
  title = (f'{workdir.name} (step {step}, head {config.model.head}): last mlpconv '
           f'maps {result["maps"].shape[1]}x{result["maps"].shape[2]} of the top-{top_k} classes')
  render(display, labels, result, names, png_path, title=title)
  return png_path, result
