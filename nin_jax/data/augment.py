"""Training augmentation inside the compiled step: random translation and flips.

Running it on device keeps the host loop to an index gather, and keying it by
(seed, step) makes a resumed run see the same augmented images. Every image is
transformed independently, so the ops shard along the batch like the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_translate(images, key, max_shift: int):
  """Zero-pads by `max_shift` pixels and crops each image back at a random offset."""
  if max_shift <= 0:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                 (h, w, image.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def random_flip(images, key):
  """Mirrors each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1, :], images)


def augment(images, key, *, translate: int, flip: bool):
  translate_key, flip_key = jax.random.split(key)
  images = random_translate(images, translate_key, translate)
  if flip:
    images = random_flip(images, flip_key)
  return images
