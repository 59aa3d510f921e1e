"""A mock ImageNet, prepared as the real one is: for tests and the input benchmark.

`write_archives` writes ILSVRC2012_img_train.tar (one tar per synset inside)
and ILSVRC2012_img_val.tar with generated JPEGs; `prepare` runs TFDS's own
imagenet2012 builder on them (`tfds build ... --file_format=array_record`),
so what the pipeline reads is laid out exactly as a real prepared ImageNet.
The images are smooth noise with grain, which compresses (and decodes) like a
photograph: at 500×375 and quality 90 about as many bytes as ImageNet's mean.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np

from nin_jax.runtime import tensorflow_loader

# Synsets of the first classes (labels 0, 1, 2, ... in TFDS's label order).
SYNSETS = ('n01440764', 'n01443537', 'n01484850', 'n01491361')


def jpeg(rng: np.random.Generator, height: int, width: int, quality: int) -> bytes:
  """One photo-like JPEG: upsampled colour noise plus fine grain."""
  from PIL import Image
  small = rng.integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), np.uint8)
  smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
  grain = rng.normal(0, 12, smooth.shape)
  image = np.clip(smooth + grain, 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, 'JPEG', quality=quality)
  return buffer.getvalue()


def write_archives(manual_dir: str, num_train: int, num_val: int, *, height: int = 375,
                   width: int = 500, quality: int = 90, seed: int = 0) -> None:
  """ImageNet's two tar files, `num_train` images spread over SYNSETS."""
  rng = np.random.default_rng(seed)
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_train.tar'), 'w') as outer:
    for c, synset in enumerate(SYNSETS):
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode='w') as inner:
        for i in range(c, num_train, len(SYNSETS)):
          _add(inner, f'{synset}_{i}.JPEG', jpeg(rng, height, width, quality))
      _add(outer, f'{synset}.tar', inner_bytes.getvalue())
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_val.tar'), 'w') as val:
    for i in range(1, num_val + 1):
      _add(val, f'ILSVRC2012_val_{i:08d}.JPEG', jpeg(rng, height, width, quality))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def prepare(manual_dir: str, data_dir: str) -> None:
  """`tfds build imagenet2012 --file_format=array_record` on the archives."""
  tfds = tensorflow_loader.tfds()
  builder = tfds.builder('imagenet2012', data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def make(data_dir: str, num_train: int, num_val: int, **image_kwargs) -> str:
  """A prepared mock imagenet2012 in `data_dir` (its archives beside it); returns data_dir."""
  manual_dir = os.path.join(data_dir, 'manual')
  write_archives(manual_dir, num_train, num_val, **image_kwargs)
  prepare(manual_dir, data_dir)
  return data_dir
