"""The per-pixel mean image: ImageNet's zoo mean_file (computed once, cached) and
MNIST's mean-image subtraction without a standard deviation."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nin_jax.data import datasets
from nin_jax.data import imagenet_input
from nin_jax.data import input_pipeline
from nin_jax.data import mean_image


def test_mean_image_is_the_per_pixel_mean_over_batches():
  images = np.random.default_rng(0).integers(0, 256, (10, 5, 4, 3), np.uint8)
  mean = mean_image.mean_image([images[:3], images[3:]])
  assert mean.shape == (5, 4, 3) and mean.dtype == np.float32
  np.testing.assert_allclose(mean, images.astype(np.float64).mean(0), rtol=1e-6)


def test_cached_mean_image_is_computed_once(tmp_path):
  calls = []
  def compute():
    calls.append(1)
    return np.full((4, 4, 3), 7.0)
  path = tmp_path / 'cache' / 'mean.npy'
  first = mean_image.cached_mean_image(path, (4, 4, 3), compute)
  second = mean_image.cached_mean_image(path, (4, 4, 3), compute)
  assert len(calls) == 1 and path.exists()
  np.testing.assert_array_equal(first, second)
  # A cache of another shape (other resize) is recomputed, not used.
  mean_image.cached_mean_image(path, (2, 2, 3), lambda: np.zeros((2, 2, 3)))
  assert np.load(path).shape == (2, 2, 3)


def test_imagenet_subtracts_the_mean_image_at_each_crops_pixels(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    mean = mean_image.imagenet_mean_image(imagenet_input.TfdsImages(None, 'train'), tmp_path)
    assert mean.shape == (256, 256, 3)
    assert list(tmp_path.glob('mean_image_imagenet2012_*_256.npy'))
    data = imagenet_input.ImageNetData(None, crop=224, mean=mean)
    plain = imagenet_input.ImageNetData(None, crop=224, mean=(0.0, 0.0, 0.0))
    # The step subtracts the mean on the device (data.device_input).
    with_mean = np.asarray(data.device_input(next(data.eval_batches(4))))
    without = np.asarray(plain.device_input(next(plain.eval_batches(4))))
  np.testing.assert_allclose(with_mean, without - mean[16:240, 16:240], atol=1e-3)


def test_imagenet_config_uses_the_mean_image():
  from nin_jax.configs import imagenet
  assert imagenet.get_config().dataset.imagenet_mean == 'image'


def test_mnist_subtracts_the_mean_image_and_divides_by_nothing():
  from nin_jax.configs import mnist
  dataset = mnist.get_config().dataset
  assert dataset.preprocessing == 'mean_image'
  with tfds.testing.mock_data(num_examples=20):
    data = input_pipeline.load(dataset)
    train_raw, _ = datasets.load_arrays('mnist', 'train')
    test_raw, _ = datasets.load_arrays('mnist', 'test')
  mean = train_raw.astype(np.float64).mean(0) / 255
  np.testing.assert_allclose(data.train_images.mean(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(data.test_images, test_raw / 255 - mean, atol=1e-6)
