"""The Caffe Model Zoo's NIN in nin_jax: convert, then evaluate or predict.

    python experiments/eval_pretrained.py --caffemodel=nin_imagenet.caffemodel \
        --workdir=workdirs/nin_zoo [--mean=imagenet_mean.binaryproto] \
        [--data_dir=DIR] [cat.jpg dog.png ...]

Converts the `.caffemodel` (nin_jax/research/caffe_zoo.py) into a workdir that
`nin_jax.train.predict.load` reads. If the dataset is prepared (ImageNet:
`imagenet2012` in TFDS under --data_dir) it reports top-1/top-5 on the
validation split (the paper: 59.36% top-1, centre crop); otherwise it prints
the top-5 classes of each image file given. Images are warped to 256², then
centre-cropped to 224, as the zoo evaluated.

The ImageNet model subtracts the mean image of --mean (Caffe's
`imagenet_mean.binaryproto`, centre-cropped), or else Caffe's mean pixel.
`--zoo=cifar10` converts the zoo CIFAR-10 NIN, whose GCN + ZCA inputs need the
CIFAR-10 training split (--data_dir) to fit the whitening.
"""

from nin_jax.runtime import process_setup

process_setup.configure()  # This script is an entry point: before jax loads.

# pylint: disable=wrong-import-position
import numpy as np
from absl import app, flags

from nin_jax.cli import errors
from nin_jax.cli import train_command as cli

flags.DEFINE_string('caffemodel', None, 'The zoo .caffemodel file.')
flags.DEFINE_enum('zoo', 'imagenet', ['imagenet', 'cifar10'], 'Which zoo model it is.')
flags.DEFINE_string('workdir', None, 'Where the converted model is written.')
flags.DEFINE_string('mean', '', "ImageNet: Caffe's mean .binaryproto ('' = mean pixel).")
flags.DEFINE_string('data_dir', '', 'TFDS data_dir holding the dataset.')
flags.DEFINE_integer('batch_size', 64, 'Evaluation batch size.')
flags.DEFINE_float('width_multiplier', 1.0,
                   'The zoo files are 1.0; tests convert narrower synthetic files.')
flags.mark_flags_as_required(['caffemodel', 'workdir'])
FLAGS = flags.FLAGS


def load_image(path: str, size: int, resize: int = 256) -> np.ndarray:
  """An image file as uint8 RGB, warped to resize² and centre-cropped to size²."""
  from PIL import Image
  with Image.open(path) as image:
    image = image.convert('RGB').resize((resize, resize), Image.BILINEAR)
  offset = (resize - size) // 2
  return np.asarray(image)[offset:offset + size, offset:offset + size]


def _main(argv):
  from nin_jax.research import caffe_zoo
  from nin_jax.data import datasets
  from nin_jax.data import input_pipeline
  from nin_jax.train import predict
  cli.library_logs_at_warning()  # Orbax logs the conversion's save and load at INFO.
  images = argv[1:]
  try:
    config = caffe_zoo.zoo_config(FLAGS.zoo, FLAGS.data_dir)
    config.model.width_multiplier = FLAGS.width_multiplier
    _, model = caffe_zoo.convert(FLAGS.caffemodel, FLAGS.zoo, config.model)
    data = None
    try:
      data = input_pipeline.create(config.dataset)
    except datasets.DatasetError as e:
      if FLAGS.zoo == 'cifar10' or not images:
        raise
      print(f'no {config.dataset.name} data ({str(e)[:80]}...): predicting on the given images')
    if FLAGS.zoo == 'imagenet':
      size = model.input_shape[0]
      mean = (caffe_zoo.read_mean(FLAGS.mean) if FLAGS.mean
              else np.asarray(caffe_zoo.IMAGENET_MEAN_RGB, np.float32))
      if mean.ndim == 3:  # the mean image, centre-cropped like the images
        oh, ow = (mean.shape[0] - size) // 2, (mean.shape[1] - size) // 2
        mean = mean[oh:oh + size, ow:ow + size]
      fitted = {'mean': mean}
    else:
      fitted = data.preprocessing
    caffe_zoo.write_workdir(FLAGS.workdir, config, model, fitted)
    print(f'converted {FLAGS.caffemodel} → {FLAGS.workdir}')
    if data is not None:
      result = predict.evaluate(model, data, FLAGS.batch_size)
      print(f'{config.dataset.name} validation: top-1 {result["top1"]:.4f}, '
            f'top-5 {result["top5"]:.4f} ({result["images"]} images)')
    predictor = predict.load(FLAGS.workdir)
    for path in images:
      size = predictor.input_shape[0]
      probs = predictor(load_image(path, size, 256 if FLAGS.zoo == 'imagenet' else size))[0]
      top = np.argsort(-probs)[:5]
      print(f'{path}: ' + ', '.join(f'{predictor.class_names[c]} {probs[c]:.3f}' for c in top))
  except (caffe_zoo.CaffeModelError, *errors.USER_ERRORS) as e:
    errors.fail(str(e))


if __name__ == '__main__':
  app.run(_main)
