"""Training curves as PNG: loss and accuracy against epoch, for one run or several.

matplotlib loads only when a figure is drawn. The records come from the run's
metrics.jsonl (metrics.read_metrics), local or in a bucket.
"""

from __future__ import annotations

import numpy as np
from etils import epath

from nin_jax.runtime import metrics
from nin_jax.runtime import storage


def plot_curves(workdir, png_path=None) -> str:
  """Train loss/accuracy and test (and validation) metrics against epoch, as one PNG."""
  workdir = storage.workdir_path(workdir)
  png_path = epath.Path(png_path) if png_path else workdir / 'curves.png'
  fig, axes = curves_figure()
  draw_curves(axes, metrics.read_metrics(workdir))
  save_curves(fig, axes, workdir.name, png_path)
  return str(png_path)


def curves_figure():
  """(figure, (loss axes, accuracy axes)) for `draw_curves`."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  return fig, axes


# How a run's splits differ when its colour is the run's, not the split's.
_SHARED_AXES_LINES = {'train': '-', 'test': '--', 'val': ':'}


def draw_curves(axes, records: list[dict], *, color=None, label: str | None = '') -> None:
  """One run's loss and accuracy against epoch on `curves_figure`'s axes.

  Train is a line, each evaluated split (test, val) a line of markers; when
  runs share the axes (`color` given), test is dashed and val dotted. Legend
  entries read '<label> <split>'; label=None adds none (a colour already named).
  """
  def series(name):
    by_step = {r['step']: r[name] for r in records if name in r}  # A resumed step: the last.
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps])

  epochs = series('epoch')
  for quantity, ax in zip(('loss', 'accuracy'), axes):
    for split in ('train', 'test', 'val'):
      steps, values = series(f'{split}/{quantity}')
      if not len(steps):
        continue
      x = np.interp(steps, *epochs) if len(epochs[0]) else steps
      evaluated = split != 'train'
      ax.plot(x, values, color=color, marker='o' if evaluated else None, markersize=3,
              linestyle=_SHARED_AXES_LINES[split] if color else '-',
              label=None if label is None else f'{label} {split}'.strip())


def save_curves(fig, axes, title: str, png_path: epath.Path) -> None:
  """Labels `curves_figure`'s axes, titles the figure and writes it as a PNG."""
  import matplotlib.pyplot as plt
  for ax, ylabel in zip(axes, ('cross-entropy', 'top-1 accuracy')):
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle(title, fontfamily=storage.font_family_for(title))
  fig.tight_layout()
  storage.save_figure(fig, png_path, dpi=100)
  plt.close(fig)
