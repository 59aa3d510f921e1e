"""ImageNet's uint8 crops → the model's float32 input, inside the compiled step.

The decode workers (nin_jax/data/imagenet_input.py) hand over uint8 crops and
where each was cut; the mean is subtracted on the device, in the train and eval
steps. So the host does no per-image work after the workers (on a 2-core host
that subtraction alone held the 1 → 2 worker scaling below 1.8×:
docs/benchmarks.md), and a quarter of float32's bytes cross shared memory and
the host-to-device link.

Caffe's data transformer subtracts a mean image at the crop's own pixels, then
mirrors. A crop arrives mirrored, so a mirrored crop takes the mirrored mean at
the mirrored place: the same pairs of numbers and the same float32 subtraction,
so the model sees Caffe's numbers bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class MeanSubtraction:
  """`batch` {'image': uint8 (N, c, c, 3), 'where': int32 (N, 3)} → float32 images.

  `mean` is a pixel (3,) or an image of the warped images' size
  (warped, warped, 3); `where` holds each crop's (top, left, flip) in the
  warped image. Traced inside jit: the mean is a constant of the program
  (786 kB for a 256² mean image).
  """

  def __init__(self, mean, warped: int):
    mean = np.asarray(mean, np.float32)
    if mean.shape not in ((3,), (warped, warped, 3)):  # dynamic_slice would clamp, silently.
      raise ValueError(f'a mean pixel (3,) or a mean image ({warped}, {warped}, 3) of the '
                       f'warped images, not {mean.shape}')
    self.mean = mean
    self.mirrored = None if mean.ndim == 1 else np.ascontiguousarray(mean[:, ::-1])

  def __call__(self, batch) -> jax.Array:
    crops = batch['image']
    images = crops.astype(jnp.float32)
    if self.mirrored is None:  # A mean pixel is the same at every crop.
      return images - self.mean
    return images - self.at_crops(batch['where'], crops.shape[1])

  def at_crops(self, where, crop: int) -> jax.Array:
    """The mean under each crop (N, crop, crop, 3), mirrored with its crop."""
    mean, mirrored = jnp.asarray(self.mean), jnp.asarray(self.mirrored)

    def window(top, left, flip):
      # The mirrored crop's pixels sit at width - left - crop of the mirrored mean.
      plain = jax.lax.dynamic_slice(mean, (top, left, 0), (crop, crop, 3))
      flipped = jax.lax.dynamic_slice(mirrored, (top, mean.shape[1] - left - crop, 0),
                                      (crop, crop, 3))
      return jnp.where(flip, flipped, plain)
    return jax.vmap(window)(where[:, 0], where[:, 1], where[:, 2] != 0)
