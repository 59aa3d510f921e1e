"""A pre-resized ImageNet cache: short side 256, JPEG quality 95, ArrayRecord.

Most of an ImageNet input core's time goes into decoding the full-size JPEG
(about 400×350 on average, some far larger). Resized once so the short side
is 256 (smaller images are kept as they are), each later decode reads about
half the pixels. Training then reads the cache with the same preprocessing
downstream (nin_jax/data/imagenet_input.py: warp to 256², crop, mirror, mean),
record for record in the same order:

    python -m nin_jax.data.imagenet_resized --data_dir=/path/to/tfds --out_dir=/path/to/resized
    python experiments/imagenet.py --config.dataset.resized_dir=/path/to/resized

Layout: `<split>.array_record-SSSSS-of-NNNNN` shards (group size 1, as Grain
reads by index) and `info.json`, written last, so a cache without it is
incomplete. A record is the label (4 bytes, little-endian int32) then the
JPEG; imagenet_input.ResizedImages reads it. An out_dir in a bucket (gs://) gets each shard uploaded through
etils.epath after it is written locally.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
from etils import epath

from nin_jax.data import datasets
from nin_jax.data import grain_stream
from nin_jax.data import imagenet_input

SHORT_SIDE = 256
QUALITY = 95
RECORDS_PER_SHARD = 10_000
CHUNK = 64  # Records a worker resizes per element.


def resize_record(jpeg: bytes, label: int, short_side: int = SHORT_SIDE,
                  quality: int = QUALITY) -> bytes:
  """One cache record: the image with its short side cut to `short_side`."""
  import cv2
  image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f'not a decodable image ({len(jpeg)} bytes)')
  height, width = image.shape[:2]
  if min(height, width) > short_side:
    scale = short_side / min(height, width)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # Area: no aliasing.
    ok, encoded = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    jpeg = encoded.tobytes()
  return imagenet_input.RESIZED_LABEL.pack(label) + jpeg


class ResizeChunk:
  """Chunk c of a split → its records, resized (what a Grain worker runs)."""

  def __init__(self, images, short_side: int, quality: int):
    self.images, self.short_side, self.quality = images, short_side, quality

  def __call__(self, c: int) -> list[bytes]:
    stop = min((int(c) + 1) * CHUNK, len(self.images))
    return [resize_record(*self.images[i], self.short_side, self.quality)
            for i in range(int(c) * CHUNK, stop)]


def convert(data_dir: str | None, out_dir: str, *, workers: int = -1,
            short_side: int = SHORT_SIDE, quality: int = QUALITY,
            records_per_shard: int = RECORDS_PER_SHARD) -> dict:
  """Writes the cache of TFDS's prepared imagenet2012 (train and validation)."""
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  info = {'short_side': short_side, 'quality': quality, 'source': data_dir or '',
          'splits': {}}
  for split in ('train', 'validation'):
    images = imagenet_input.TfdsImages(data_dir, split)
    make = ResizeChunk(images, short_side, quality)
    chunks = -(-len(images) // CHUNK)
    records = (r for chunk in grain_stream.stream(
        make, 0, chunks, min(grain_stream.resolve_workers(workers), chunks)) for r in chunk)
    shards = _write_shards(records, len(images), out, split, records_per_shard)
    info['splits'][split] = {'num_examples': len(images), 'shards': shards}
  (out / imagenet_input.RESIZED_INFO).write_text(json.dumps(info, indent=2))
  return info


def _write_shards(records, count: int, out: epath.Path, split: str,
                  records_per_shard: int) -> list[str]:
  """`count` records into ArrayRecord shards in `out`; returns their names."""
  from array_record.python import array_record_module
  num_shards = max(1, -(-count // records_per_shard))
  names = [f'{split}.array_record-{s:05d}-of-{num_shards:05d}' for s in range(num_shards)]
  with tempfile.TemporaryDirectory() as tmp:
    for s, name in enumerate(names):
      local = os.path.join(tmp, name)
      writer = array_record_module.ArrayRecordWriter(local, 'group_size:1')
      for _ in range(min(records_per_shard, count - s * records_per_shard)):
        writer.write(next(records))
      writer.close()
      epath.Path(local).copy(out / name, overwrite=True)
      os.remove(local)
  return names


def main() -> None:
  """`python -m nin_jax.data.imagenet_resized`: the one command that writes the cache."""
  from absl import app, flags
  flags.DEFINE_string('data_dir', '', 'TFDS data_dir holding a prepared imagenet2012 '
                      "('' = TFDS's default).")
  flags.DEFINE_string('out_dir', None, 'Where the cache is written (a gs:// bucket works).')
  flags.DEFINE_integer('workers', -1, 'Resizing processes (-1: one per core).')
  flags.DEFINE_integer('short_side', SHORT_SIDE, 'Images are cut to this short side.')
  flags.DEFINE_integer('quality', QUALITY, 'JPEG quality of the resized images.')
  flags.mark_flag_as_required('out_dir')
  FLAGS = flags.FLAGS

  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
      info = convert(FLAGS.data_dir or None, FLAGS.out_dir, workers=FLAGS.workers,
                     short_side=FLAGS.short_side, quality=FLAGS.quality)
    except datasets.DatasetError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)
    counts = ', '.join(f'{s} {v["num_examples"]}' for s, v in info['splits'].items())
    print(f'wrote the pre-resized ImageNet to {FLAGS.out_dir}: {counts} images')

  app.run(run)


if __name__ == '__main__':
  main()
