"""Class maps of a trained run (the paper's figure 4).

    python experiments/classmap.py --workdir=workdirs/quickstart [--images=0,1,2,3] \
        [--top_k=3] [--step=N] [--out=PATH.png]

Loads the run's config.json and newest (or --step) checkpoint and renders, for
each test image, the image and the last mlpconv layer's maps of its top-k
predicted classes. See nin_jax/classmap.py.
"""

import sys

from absl import app, flags

from nin_jax import cli

flags.DEFINE_string('workdir', None, 'Workdir of a trained run (config.json + checkpoints/).')
flags.DEFINE_list('images', ['0', '1', '2', '3'], 'Test image indices, comma-separated.')
flags.DEFINE_integer('top_k', 3, 'Maps of this many most probable classes per image.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
flags.DEFINE_string('out', None, 'PNG path (default: <workdir>/class_maps.png).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from nin_jax import classmap  # After flag parsing, so --help stays fast.
  try:
    indices = [int(i) for i in FLAGS.images]
    path, result = classmap.make_figure(FLAGS.workdir, FLAGS.out, indices=indices,
                                        top_k=FLAGS.top_k, step=FLAGS.step)
  except cli.USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  print(f'wrote {path}: maps {result["maps"].shape[1:3]} for images {indices}')


if __name__ == '__main__':
  app.run(_main)
