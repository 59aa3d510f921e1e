"""ImageNet (ILSVRC-2012) streamed from TFDS, as the Caffe model zoo NIN saw it.

Training: decode, resize to 256×256 (Caffe's warp, aspect ratio not kept: an
assumption, the zoo's convert_imageset flags are not published), subtract the
mean, random 224×224 crop (or 227), random mirror. Evaluation: the same resize
and mean, then a centre crop. The mean is the zoo's per-pixel mean IMAGE of
the warped training set (`mean` = nin_jax.mean_image.imagenet_mean_image) or
Caffe's mean pixel (MEAN_RGB, the default here).

Training reads records by index from TFDS's ArrayRecord data source
(`builder.as_data_source`): global batch k is the k-th slice of a seeded
permutation of the whole split (a fresh one each epoch,
`input_pipeline.train_indices`, the same order as the in-memory datasets),
each process reads only its rows of it, and crops and flips are keyed by
(seed, position in the global stream). So the stream's position is the train
step the checkpoint already holds: a run resumed at step k reads its first
record at k, in O(1), and never a record consumed before k; the result does
not depend on the number of hosts either.
Why not a checkpointed tf.data iterator: over sequential TFRecords its state
is the shuffle buffer (GBs of JPEGs per host per checkpoint), tied to the
process count. Why not Grain: it would add a dependency to do the same
index-based shuffle over the same data source. TensorFlow (decode and
augment, in parallel threads) never sees an accelerator.

ImageNet cannot be downloaded by TFDS: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in a directory and run, once, on any machine
    tfds build imagenet2012 --manual_dir=/path/to/tars --data_dir=/path/to/tfds \
        --file_format=array_record
then point --config.dataset.data_dir at /path/to/tfds (a gs:// bucket works
for TPU pods).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np

from nin_jax import datasets, tensorflow_loader

TFDS_NAME = 'imagenet2012'
NUM_CLASSES = 1000
RESIZE = 256
# Caffe's ImageNet mean pixel (B, G, R) = (104, 117, 123), here in RGB order.
MEAN_RGB = (123.0, 117.0, 104.0)


def _tf():
  return tensorflow_loader.tensorflow()


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
  num_classes: int = NUM_CLASSES
  mean: tuple | np.ndarray = MEAN_RGB  # a pixel (3,) or a mean image (256, 256, 3)

  def __post_init__(self):
    tfds = tensorflow_loader.tfds()
    self._source = None
    self.records_read = 0  # Training records read so far (resume reads none before k).
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

  def _read(self, split: str):
    """This process's part of `split`, in order (evaluation)."""
    tfds = self._tfds
    return self._builder.as_dataset(
        split=tfds.split_for_jax_process(split, drop_remainder=False),
        shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1),
        as_supervised=True)

  def train_batches(self, global_batch_size: int, seed: int,
                    start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of every global batch from `start_step` on.

    The records of step k are read only when step k's batch is prepared:
    nothing before `start_step` is read, skipped or decoded.
    """
    tf = _tf()
    from nin_jax import input_pipeline
    source = self._train_source()
    num_train, rows = len(source), input_pipeline.process_rows(global_batch_size)
    positions = _positions(num_train, global_batch_size, seed, start_step, rows)
    key_seed, crop, mean = seed * 1_000_003, self.crop, self.mean

    def read(record):
      self.records_read += 1
      example = source[int(record)]
      return example['image'], np.int32(example['label'])

    def prepare(position, record):
      jpeg, label = tf.numpy_function(read, [record], (tf.string, tf.int32), stateful=True)
      image = tf.io.decode_jpeg(jpeg, channels=3)
      key = tf.stack([tf.constant(key_seed, tf.int64), position])
      return {'image': preprocess_train(image, key, crop, mean),
              'label': tf.reshape(label, ())}

    ds = tf.data.Dataset.from_generator(
        lambda: positions, output_signature=(tf.TensorSpec((), tf.int64),) * 2)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    local = rows.stop - rows.start
    ds = ds.batch(local, drop_remainder=True).prefetch(2)
    yield from self._tfds.as_numpy(ds)

  def _train_source(self):
    """The training split, random access, JPEGs left encoded (decoded in tf.data)."""
    if self._source is None:
      try:
        self._source = self._builder.as_data_source(
            split='train', decoders={'image': self._tfds.decode.SkipDecoding()})
      except (FileNotFoundError, ValueError, NotImplementedError) as e:
        raise datasets.DatasetError(
            f'imagenet2012 in {self.data_dir} has no ArrayRecord files, which '
            f'training reads by index (TFDS said: {e}). Build it with '
            '`tfds build imagenet2012 --file_format=array_record ...`') from e
    return self._source

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
    ds = self._read('validation').map(
        lambda image, label: {'image': preprocess_eval(image, crop, mean),
                              'label': tf.cast(label, tf.int32),
                              'mask': tf.constant(1.0)},
        num_parallel_calls=tf.data.AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        {'image': tf.zeros((crop, crop, 3)), 'label': tf.constant(0),
         'mask': tf.constant(0.0)}).repeat()
    ds = ds.concatenate(padding).batch(local).take(num_batches)
    yield from self._tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE))


def _positions(num_train: int, global_batch_size: int, seed: int, start_step: int,
               rows: slice) -> Iterator[tuple[int, int]]:
  """(position in the global stream, record index) of this process's rows,
  step after step from `start_step`; the epoch's permutation is made once."""
  from nin_jax import input_pipeline
  per_epoch = input_pipeline.steps_per_epoch(num_train, global_batch_size)
  step = start_step
  while True:
    epoch, first = divmod(step, per_epoch)
    order = input_pipeline.epoch_order(num_train, seed, epoch)
    for k in range(first, per_epoch):
      batch = order[k * global_batch_size:(k + 1) * global_batch_size]
      base = (epoch * per_epoch + k) * global_batch_size
      for row in range(rows.start, rows.stop):
        yield base + row, int(batch[row])
    step = (epoch + 1) * per_epoch


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
