"""Every run records its config as TensorBoard hparams, next to its metric scalars,
so a sweep's trials compare in TensorBoard's HParams view."""

import glob
import os

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata

from nin_jax.runtime import metrics


def _session_hparams(logdir):
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={'tensors': 0})
  acc.Reload()
  content = acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
  info = metadata.parse_session_start_info_plugin_data(content)
  return info, {k: v.WhichOneof('kind') and getattr(v, v.WhichOneof('kind'))
                for k, v in info.hparams.items()}, acc


def test_a_run_writes_its_flattened_config_as_hparams(trained_tiny_run):
  workdir, config = trained_tiny_run
  info, hparams, acc = _session_hparams(str(workdir / 'tensorboard'))
  assert hparams['optim.learning_rate'] == config.optim.learning_rate
  assert hparams['model.width_multiplier'] == config.model.width_multiplier
  assert hparams['dataset.name'] == 'fashion_mnist'
  assert hparams['augment.flip'] is False
  assert hparams['optim.decay_epochs'] == str(tuple(config.optim.decay_epochs))
  assert len(hparams) == len(metrics.flatten_hparams(config))
  assert info.group_name == os.path.basename(workdir)
  # The metrics the view shows beside them: the run's last test accuracy.
  assert 'test/accuracy' in acc.Tags()['tensors']
