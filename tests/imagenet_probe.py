"""Helper processes for tests/test_imagenet_input.py (not a test module).

    imagenet_probe.py stream DATA_DIR START WORKERS
        prints 'step K DIGEST' for each training batch from step START on,
        made by WORKERS decode processes, until killed.
    imagenet_probe.py mean DATA_DIR CACHE_DIR OUT PROCESS_ID NUM_PROCESSES PORT
        computes the mean image (with jax.distributed when NUM_PROCESSES > 1)
        and saves it to OUT.
"""

import hashlib
import sys

import numpy as np

BATCH = 4
SEED = 7


def digest(batch) -> str:
  h = hashlib.sha256()
  for key in sorted(batch):
    h.update(np.ascontiguousarray(batch[key]).tobytes())
  return h.hexdigest()[:16]


def stream(data_dir: str, start: int, workers: int) -> None:
  from nin_jax.data import imagenet_input
  data = imagenet_input.ImageNetData(data_dir, crop=32, workers=workers)
  for step, batch in enumerate(data.train_batches(BATCH, SEED, start), start):
    print(f'step {step} {digest(batch)}', flush=True)


def mean(data_dir, cache_dir, out, process_id, num_processes, port) -> None:
  import jax
  if int(num_processes) > 1:
    jax.distributed.initialize(f'127.0.0.1:{port}', int(num_processes), int(process_id))
  from nin_jax.data import imagenet_input
  from nin_jax.data import mean_image
  images = imagenet_input.TfdsImages(data_dir, 'train')
  np.save(out, mean_image.imagenet_mean_image(images, cache_dir, workers=1))


if __name__ == '__main__':
  command, *args = sys.argv[1:]
  if command == 'stream':
    stream(args[0], int(args[1]), int(args[2]))
  else:
    mean(*args)
