"""Class maps of a trained run (the paper's figure 4).

    python experiments/classmap.py --workdir=workdirs/quickstart [--images=0,1,2,3] \
        [--top_k=3] [--step=N] [--out=PATH.png]

Loads the run's config.json and newest (or --step) checkpoint and renders, for
each test image, the image and the last mlpconv layer's maps of its top-k
predicted classes. See nin_jax/research/classmap.py.
"""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.classmap()
