"""ImageNet (ILSVRC-2012) streamed with tf.data, as the Caffe model zoo NIN saw it.

Training: decode, resize to 256×256 (Caffe's warp, aspect ratio not kept: an
assumption, the zoo's convert_imageset flags are not published), subtract the
mean, random 224×224 crop (or 227), random mirror. Evaluation: the same resize
and mean, then a centre crop. The mean is the zoo's per-pixel mean IMAGE of
the warped training set (`mean` = nin_jax.mean_image.imagenet_mean_image) or
Caffe's mean pixel (MEAN_RGB, the default here).

Each process reads only its own part of each split
(`tfds.split_for_jax_process`), so a pod's hosts never decode the same image.
The training stream is a pure function of (seed, process): files and the
shuffle buffer are seeded, crops and flips use stateless ops keyed by the
element's position, and a resumed run skips the elements it has already seen
(before decoding, so skipping is cheap). TensorFlow never sees an accelerator.

ImageNet cannot be downloaded by TFDS: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in a directory and run, once, on any machine
    tfds build imagenet2012 --manual_dir=/path/to/tars --data_dir=/path/to/tfds
then point --config.dataset.data_dir at /path/to/tfds (a gs:// bucket works
for TPU pods).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np

from nin_jax import datasets

TFDS_NAME = 'imagenet2012'
NUM_CLASSES = 1000
RESIZE = 256
# Caffe's ImageNet mean pixel (B, G, R) = (104, 117, 123), here in RGB order.
MEAN_RGB = (123.0, 117.0, 104.0)


def _tf():
  return datasets._import_tf()  # pylint: disable=protected-access


def _warp_minus_mean(image, mean):
  """Warp to 256² and subtract the mean: a pixel (3,) or an image (256, 256, 3).

  Before the crop, so each crop sees the mean image at its own pixels, as
  Caffe's data transformer does."""
  tf = _tf()
  image = tf.image.resize(tf.cast(image, tf.float32), (RESIZE, RESIZE))
  return image - tf.constant(mean, tf.float32)


def preprocess_train(image, seed, crop: int, mean=MEAN_RGB):
  """uint8 HWC → float32 crop×crop×3: warp to 256², −mean, random crop, mirror."""
  tf = _tf()
  image = _warp_minus_mean(image, mean)
  image = tf.image.stateless_random_crop(image, (crop, crop, 3), seed=seed)
  return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def preprocess_eval(image, crop: int, mean=MEAN_RGB):
  """uint8 HWC → float32: warp to 256², −mean, centre crop."""
  image = _warp_minus_mean(image, mean)
  offset = (RESIZE - crop) // 2
  return image[offset:offset + crop, offset:offset + crop, :]


def normalize(images: np.ndarray, fitted: dict[str, np.ndarray]) -> np.ndarray:
  """Cropped uint8 RGB images → the model's input: [0, 255] pixels minus the mean.

  fitted['mean'] is a mean pixel (3,) or a mean image cropped like the images.
  """
  return np.asarray(images, np.float32) - np.asarray(fitted['mean'], np.float32)


@dataclasses.dataclass
class ImageNetData:
  """The streaming source; same interface as input_pipeline.InMemoryData."""
  data_dir: str | None
  crop: int = 224
  shuffle_buffer: int = 16_384
  num_classes: int = NUM_CLASSES
  mean: tuple | np.ndarray = MEAN_RGB  # a pixel (3,) or a mean image (256, 256, 3)

  def __post_init__(self):
    import tensorflow_datasets as tfds
    self._tfds = tfds
    try:
      self._builder = tfds.builder(TFDS_NAME, data_dir=self.data_dir)
      splits = self._builder.info.splits
      if len(splits):
        self.num_train = splits['train'].num_examples
        self.num_test = splits['validation'].num_examples
      else:  # No metadata (or tfds.testing.mock_data): count what reads back.
        self.num_train, self.num_test = (
            sum(1 for _ in self._builder.as_dataset(split=s)) for s in ('train', 'validation'))
    except (AssertionError, FileNotFoundError, KeyError,
            tfds.core.registered.DatasetNotFoundError) as e:
      raise self._not_prepared(e) from e
    if not self.num_train:
      raise self._not_prepared(None)

  def _not_prepared(self, cause) -> datasets.DatasetError:
    where = self.data_dir or 'the default TFDS dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)'
    said = f' (TFDS said: {cause})' if cause else ''
    return datasets.DatasetError(
        f'imagenet2012 is not prepared in {where}. ImageNet needs a manual '
        'download: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in '
        'a directory and run `tfds build imagenet2012 --manual_dir=<that dir> '
        '--data_dir=<DIR>`, then pass --config.dataset.data_dir=<DIR>' + said)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.crop, self.crop, 3)

  @property
  def preprocessing(self) -> dict[str, np.ndarray]:
    """The statistics `normalize` needs (input_pipeline.fit_preprocessing's counterpart).

    A mean image is cropped as evaluation crops the images (the centre).
    """
    mean = np.asarray(self.mean, np.float32)
    if mean.ndim == 3:
      offset = (RESIZE - self.crop) // 2
      mean = mean[offset:offset + self.crop, offset:offset + self.crop]
    return {'mean': mean}

  def _read(self, split: str, *, shuffle_seed: int | None):
    tfds = self._tfds
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                  interleave_cycle_length=16 if shuffle_seed is not None else 1)
    return self._builder.as_dataset(
        split=tfds.split_for_jax_process(split, drop_remainder=False),
        shuffle_files=shuffle_seed is not None, read_config=read_config,
        as_supervised=True)

  def train_batches(self, global_batch_size: int, seed: int,
                    start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of every global batch from `start_step` on."""
    tf = _tf()
    local = global_batch_size // jax.process_count()
    process_seed = seed * 1_000_003 + jax.process_index()
    ds = self._read('train', shuffle_seed=process_seed).repeat()
    ds = ds.shuffle(self.shuffle_buffer, seed=process_seed, reshuffle_each_iteration=True)
    ds = ds.enumerate().skip(start_step * local)  # Before decoding: cheap.
    crop, mean = self.crop, self.mean

    def prepare(index, example):
      image, label = example
      key = tf.stack([tf.cast(process_seed, tf.int64), index])
      return {'image': preprocess_train(image, key, crop, mean),
              'label': tf.cast(label, tf.int32)}

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    yield from self._tfds.as_numpy(ds)

  def eval_batches(self, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The whole validation split once across processes, padded and masked.

    Processes hold splits that differ by at most one image; every process
    yields the same number of batches (masked padding) so none waits forever.
    """
    tf = _tf()
    local = global_batch_size // jax.process_count()
    per_process = -(-self.num_test // jax.process_count())
    num_batches = -(-per_process // local)
    crop, mean = self.crop, self.mean
    ds = self._read('validation', shuffle_seed=None).map(
        lambda image, label: {'image': preprocess_eval(image, crop, mean),
                              'label': tf.cast(label, tf.int32),
                              'mask': tf.constant(1.0)},
        num_parallel_calls=tf.data.AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        {'image': tf.zeros((crop, crop, 3)), 'label': tf.constant(0),
         'mask': tf.constant(0.0)}).repeat()
    ds = ds.concatenate(padding).batch(local).take(num_batches)
    yield from self._tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE))


def decode_throughput(num_images: int = 256, *, threads: int = 1,
                      height: int = 375, width: int = 500, crop: int = 224) -> float:
  """Images/s of JPEG decode + the training transform on `threads` CPU cores.

  Uses synthetic JPEGs of ImageNet's typical size (500×375), since the
  decode cost, not the content, is what is measured.
  """
  import time
  tf = _tf()
  rng = np.random.default_rng(0)
  # Smooth noise compresses like a photo; pure noise would decode slower.
  small = rng.integers(0, 255, (num_images, height // 8, width // 8, 3), np.uint8)
  jpegs = [tf.io.encode_jpeg(tf.image.resize(s, (height, width), 'bilinear')
                             .numpy().astype(np.uint8)).numpy() for s in small]
  ds = tf.data.Dataset.from_tensor_slices(jpegs).enumerate().map(
      lambda i, b: preprocess_train(tf.io.decode_jpeg(b, channels=3),
                                    tf.stack([tf.constant(0, tf.int64), i]), crop),
      num_parallel_calls=threads)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  ds = ds.with_options(options).batch(64)
  for _ in ds.take(1):  # Warm up tracing.
    pass
  t0 = time.perf_counter()
  n = sum(int(batch.shape[0]) for batch in ds)
  return n / (time.perf_counter() - t0)
