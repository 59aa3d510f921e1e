"""ImageNet (ILSVRC-2012) streamed by index and decoded in worker processes,
as the Caffe model zoo NIN saw it.

Preprocessing, as Caffe's convert_imageset and data layer: decode, warp to
256×256 with OpenCV's bilinear resize (Caffe's own call; the aspect ratio is
not kept: an assumption, the zoo's convert_imageset flags are not published),
kept as uint8 like Caffe's LMDB. Training: a random 224×224 crop (or 227),
minus the mean at the crop's pixels, random mirror. Evaluation: the centre
crop. The mean is the zoo's per-pixel mean IMAGE of the warped training set
(`mean` = nin_jax.data.mean_image.imagenet_mean_image) or Caffe's mean pixel
(MEAN_RGB, the default here).

Records are read by index from an ArrayRecord data source: TFDS's
`imagenet2012` (`builder.as_data_source`) or the pre-resized cache of
nin_jax/data/imagenet_resized.py. Element k of the training stream is this
process's rows of global batch k: the k-th slice of a seeded permutation of
the split (a fresh one each epoch, data_order.epoch_order, as the in-memory
datasets), crops and flips keyed by (seed, position in the global stream).
Grain worker processes (config.dataset.workers, one per core by default) each
make whole batches of uint8 crops (nin_jax/data/grain_stream.py), outside this
process's GIL, and Grain hands them back in order with where each crop was
cut. The mean is subtracted on the device, in the compiled step
(`ImageNetData.device_input`, nin_jax/data/mean_subtraction.py): this process
does no per-image work, and a quarter of float32's bytes cross shared memory
and the link to the device; the numbers are Caffe's, bit for bit. So the batches depend
on neither the number of workers nor the number of hosts, and the stream's
state is the train step the checkpoint already holds: a run resumed at step
k makes element k first, in O(1), and reads no record consumed before k.
(Grain's own iterator state would add nothing and tie a resume to the worker
count.) Nothing here imports
TensorFlow in the workers: OpenCV decodes, TFDS reads records without it (this
process loads TFDS through nin_jax/runtime/tensorflow_loader.py, as every TFDS path).

ImageNet cannot be downloaded by TFDS: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in a directory and run, once, on any machine
    tfds build imagenet2012 --manual_dir=/path/to/tars --data_dir=/path/to/tfds \
        --file_format=array_record
then point --config.dataset.data_dir at /path/to/tfds (a gs:// bucket works
for TPU pods).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
from typing import Iterator

import numpy as np
from etils import epath

from nin_jax.data import data_order
from nin_jax.data import datasets
from nin_jax.data import grain_stream
from nin_jax.runtime import tensorflow_loader

TFDS_NAME = 'imagenet2012'
NUM_CLASSES = 1000
RESIZE = 256
# Caffe's ImageNet mean pixel (B, G, R) = (104, 117, 123), here in RGB order.
MEAN_RGB = (123.0, 117.0, 104.0)
# The pre-resized cache's table of contents and its records' label prefix.
RESIZED_INFO = 'info.json'
RESIZED_LABEL = struct.Struct('<i')
# The position key of a crop: (seed * this, position in the global stream).
_SEED_STRIDE = 1_000_003


def decode_warp(jpeg: bytes) -> np.ndarray:
  """JPEG bytes → uint8 RGB (256, 256, 3): Caffe's cv::imdecode + cv::resize (bilinear)."""
  import cv2
  image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f'not a decodable image ({len(jpeg)} bytes)')
  image = cv2.resize(image, (RESIZE, RESIZE), interpolation=cv2.INTER_LINEAR)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # OpenCV decodes BGR.


def crop_into(warped: np.ndarray, top: int, left: int, crop: int, flip: bool,
              out: np.ndarray) -> None:
  """The uint8 crop×crop×3 of `warped` at (top, left), mirrored if `flip`, into `out`."""
  import cv2
  window = warped[top:top + crop, left:left + crop]
  if flip:
    cv2.flip(window, 1, dst=out)  # Mirrors in place of a slow negative-stride copy.
  else:
    np.copyto(out, window)


def train_crop(seed: int, position: int, crop: int) -> tuple[int, int, bool]:
  """(top, left, flip) of the training image at `position` of the global stream."""
  rng = np.random.default_rng([seed * _SEED_STRIDE, position])
  top, left = rng.integers(0, RESIZE - crop + 1, size=2)
  return int(top), int(left), bool(rng.random() < 0.5)


def normalize(images: np.ndarray, fitted: dict[str, np.ndarray]) -> np.ndarray:
  """Cropped uint8 RGB images → the model's input: [0, 255] pixels minus the mean.

  fitted['mean'] is a mean pixel (3,) or a mean image cropped like the images.
  """
  return np.asarray(images, np.float32) - np.asarray(fitted['mean'], np.float32)


class TfdsImages:
  """One split of TFDS's imagenet2012 by index: (JPEG bytes, label).

  Pickled into each worker with its ArrayRecord data source (made for that).
  """

  def __init__(self, data_dir: str | None, split: str):
    tfds = tensorflow_loader.tfds()
    self.name = TFDS_NAME
    try:
      builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
      self.directory = str(builder.data_dir)
      self._source = builder.as_data_source(
          split=split, decoders={'image': tfds.decode.SkipDecoding()})
    except (AssertionError, FileNotFoundError, KeyError, ValueError, NotImplementedError,
            tfds.core.registered.DatasetNotFoundError) as e:
      raise _not_prepared(data_dir, e) from e
    if not len(self._source):
      raise _not_prepared(data_dir, None)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> tuple[bytes, int]:
    example = self._source[int(index)]
    return example['image'], int(example['label'])


def _not_prepared(data_dir, cause) -> datasets.DatasetError:
  where = data_dir or 'the default TFDS dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)'
  said = f' (TFDS said: {" ".join(str(cause).split())})' if cause else ''  # One line.
  return datasets.DatasetError(
      f'imagenet2012 is not prepared in {where} as ArrayRecord files, which '
      'are read by index. ImageNet needs a manual download: put '
      'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a directory and run '
      '`tfds build imagenet2012 --manual_dir=<that dir> --data_dir=<DIR> '
      '--file_format=array_record`, then pass --config.dataset.data_dir=<DIR>' + said)


class ResizedImages:
  """One split of the pre-resized cache by index: (JPEG bytes, label), as TfdsImages.

  The cache (written by nin_jax/data/imagenet_resized.py): `<split>` shards of
  ArrayRecord listed in RESIZED_INFO, which is written last; a record is the
  label (RESIZED_LABEL) then the JPEG.
  """

  def __init__(self, directory: str, split: str):
    from array_record.python import array_record_data_source
    self.name = 'imagenet2012_resized'
    self.directory = str(directory)
    path = epath.Path(directory) / RESIZED_INFO
    if not path.exists():
      raise datasets.DatasetError(
          f'{directory} holds no complete pre-resized ImageNet ({RESIZED_INFO} is missing). '
          'Write one with `python -m nin_jax.data.imagenet_resized --data_dir=<TFDS dir> '
          f'--out_dir={directory}`')
    shards = json.loads(path.read_text())['splits'][split]['shards']
    self._source = array_record_data_source.ArrayRecordDataSource(
        [str(epath.Path(directory) / name) for name in shards])

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> tuple[bytes, int]:
    record = self._source[int(index)]
    return record[RESIZED_LABEL.size:], RESIZED_LABEL.unpack_from(record)[0]


def open_split(data_dir: str | None, resized_dir: str, split: str):
  """The records of `split`: the pre-resized cache if `resized_dir`, else TFDS's."""
  return ResizedImages(resized_dir, split) if resized_dir else TfdsImages(data_dir, split)


class TrainBatch:
  """Step k → this process's rows of global batch k, decoded, cropped and mirrored.

  What a Grain worker runs; a pure function of (seed, k). uint8 crops and
  where each was cut (`ImageNetData.device_input` makes them the model's input).
  """

  def __init__(self, images, global_batch_size: int, rows: slice, seed: int, crop: int):
    self.images, self.global_batch_size, self.rows = images, global_batch_size, rows
    self.seed, self.crop = seed, crop
    self.per_epoch = data_order.steps_per_epoch(len(images), global_batch_size)
    self._epoch, self._order = None, None  # One permutation per epoch, drawn once.

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    epoch, k = divmod(int(step), self.per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._order = data_order.epoch_order(len(self.images), self.seed, epoch)
    g = self.global_batch_size
    records = self._order[k * g:(k + 1) * g][self.rows]
    first = int(step) * g + self.rows.start  # Position of the first row in the stream.
    batch = _empty_batch(len(records), self.crop)
    for row, record in enumerate(records):
      jpeg, batch['label'][row] = self.images[record]
      top, left, flip = batch['where'][row] = train_crop(self.seed, first + row, self.crop)
      crop_into(decode_warp(jpeg), top, left, self.crop, flip, out=batch['image'][row])
    return batch


class EvalBatch:
  """Evaluation batch b → this process's rows of it, centre crops, padded and masked."""

  def __init__(self, images, global_batch_size: int, rows: slice, crop: int):
    self.images, self.global_batch_size, self.rows = images, global_batch_size, rows
    self.crop = crop

  def __call__(self, batch: int) -> dict[str, np.ndarray]:
    indices = np.arange(batch * self.global_batch_size,
                        (batch + 1) * self.global_batch_size)[self.rows]
    offset = (RESIZE - self.crop) // 2
    out = _empty_batch(len(indices), self.crop)
    out['image'][...], out['label'][...] = 0, 0
    out['where'][...] = (offset, offset, 0)
    valid = indices < len(self.images)
    for i in np.flatnonzero(valid):
      jpeg, out['label'][i] = self.images[indices[i]]
      crop_into(decode_warp(jpeg), offset, offset, self.crop, False, out=out['image'][i])
    out['mask'] = valid.astype(np.float32)
    return out


def _empty_batch(rows: int, crop: int) -> dict[str, np.ndarray]:
  return {'image': np.empty((rows, crop, crop, 3), np.uint8),
          'label': np.empty((rows,), np.int32),
          'where': np.empty((rows, 3), np.int32)}  # (top, left, flip) of each crop.


def plain_batches(raw_batches):
  """Worker batches as plain numpy arrays, which the step's mean subtraction takes."""
  with contextlib.closing(raw_batches):  # Closing this stops the workers.
    for raw in raw_batches:
      # Plain views of Grain's shared-memory arrays: its subclass costs more to
      # slice and copy than the arrays themselves (numpy's __array_finalize__).
      yield {key: np.asarray(value) for key, value in raw.items()}


@dataclasses.dataclass
class ImageNetData:
  """The streaming source; same interface as input_pipeline.InMemoryData."""
  data_dir: str | None
  crop: int = 224
  num_classes: int = NUM_CLASSES
  mean: tuple | np.ndarray = MEAN_RGB  # a pixel (3,) or a mean image (256, 256, 3)
  workers: int = 0  # Decode processes (0: in this process; -1: one per core).
  resized_dir: str = ''  # The pre-resized cache (nin_jax/data/imagenet_resized.py), if any.

  def __post_init__(self):
    self.train_images = open_split(self.data_dir, self.resized_dir, 'train')
    self.test_images = open_split(self.data_dir, self.resized_dir, 'validation')
    self.num_train, self.num_test = len(self.train_images), len(self.test_images)
    self.workers = grain_stream.resolve_workers(self.workers)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.crop, self.crop, 3)

  @property
  def device_input(self):
    """What the compiled step makes of a batch: uint8 crops minus the mean, float32."""
    # Imported here: the decode workers import this module and must not load jax.
    from nin_jax.data import mean_subtraction
    return mean_subtraction.MeanSubtraction(self.mean, warped=RESIZE)

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

  def train_batches(self, global_batch_size: int, seed: int,
                    start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of every global batch from `start_step` on.

    The records of step k are read only when step k's batch is made: nothing
    before `start_step` is read, skipped or decoded.
    """
    make = TrainBatch(self.train_images, global_batch_size,
                      data_order.process_rows(global_batch_size), seed, self.crop)
    return plain_batches(
        grain_stream.stream(make, start_step, grain_stream.FOREVER, self.workers))

  def eval_batches(self, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The whole validation split once across processes, padded and masked.

    Every process yields the same number of batches (masked padding), so none
    waits forever.
    """
    make = EvalBatch(self.test_images, global_batch_size,
                     data_order.process_rows(global_batch_size), self.crop)
    count = data_order.num_eval_batches(self.num_test, global_batch_size)
    return plain_batches(grain_stream.stream(make, 0, count, min(self.workers, count)))
