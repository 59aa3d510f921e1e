"""Class maps (paper figure 4): for a trained checkpoint, the maps rendered are the
last mlpconv layer's maps of that checkpoint's model, ranked by its predictions."""

import numpy as np
import pytest
from flax import nnx

from conftest import make_tiny_config, run_cli
from nin_jax.runtime import checkpoint
from nin_jax.research import classmap
from nin_jax.data import input_pipeline
from nin_jax.train import predict
from nin_jax.train import train_step


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A run's workdir (config.json + checkpoints/4) whose every weight and batch-norm
  statistic is off its init, so a loader that ignored the checkpoint is caught.

  Saved with the train loop's own state and Checkpointer instead of trained: a
  few real steps would barely move a tiny net and cost a compile.
  """
  import jax
  import jax.numpy as jnp
  config = tiny_config_fn()
  workdir = tmp_path_factory.mktemp('run')
  state, _ = train_step.create_train_state(config, 10, (28, 28, 1), 8, 16)
  leaves, treedef = jax.tree.flatten((state.params, state.batch_stats))
  keys = jax.random.split(jax.random.key(7), len(leaves))
  n_params = len(jax.tree.leaves(state.params))
  moved = [x + 0.05 * jax.random.normal(k, x.shape) if i < n_params  # weights
           else x * jax.random.uniform(k, x.shape, minval=0.5, maxval=1.5) + 0.1  # stats > 0
           for i, (x, k) in enumerate(zip(leaves, keys))]
  params, batch_stats = jax.tree.unflatten(treedef, moved)
  state = state.replace(step=jnp.asarray(4, jnp.int32), params=params, batch_stats=batch_stats)
  checkpointer = checkpoint.Checkpointer(str(workdir))
  checkpointer.save(4, state)
  checkpointer.close()
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  # What the train loop writes beside its checkpoints for predict.load.
  predict.write_inference_files(workdir, config, input_pipeline.load(config.dataset).preprocessing,
                                predict.class_names(config.dataset.name, 10))
  return workdir, config


def tiny_config_fn():
  return make_tiny_config()


def reference_model(workdir, config):
  """The checkpoint restored the way training resumes (not classmap's loader)."""
  state, statics = train_step.create_train_state(config, 10, (28, 28, 1), 8, 16)
  state = checkpoint.Checkpointer(str(workdir)).restore_latest(state)
  return nnx.merge(statics.graphdef, state.params, state.batch_stats), state


def test_rendered_maps_are_the_checkpoints_class_maps(trained, tmp_path):
  workdir, config = trained
  png, result = classmap.make_figure(str(workdir), str(tmp_path / 'maps.png'),
                                     indices=[0, 5, 7], top_k=3)
  assert (tmp_path / 'maps.png').stat().st_size > 10_000

  model, state = reference_model(workdir, config)
  assert int(state.step) == 4
  # Reference inputs: the whole dataset loaded and preprocessed as training does.
  full = make_tiny_config(**{'dataset.test_subset': 0})
  test = input_pipeline.load(full.dataset)
  inputs = test.test_images[[0, 5, 7]]
  labels = test.test_labels[[0, 5, 7]]
  expected = np.asarray(model.class_maps(inputs))
  assert result['maps'].shape == expected.shape == (3, 7, 7, 10)
  np.testing.assert_allclose(result['maps'], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(result['labels'], labels)

  # GAP head: a class's logit is its map's mean; the top-k are the largest, in order.
  np.testing.assert_allclose(result['maps'].mean(axis=(1, 2)), result['logits'],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(result['top'], np.argsort(-result['logits'], axis=1)[:, :3])
  assert np.all(np.diff(np.take_along_axis(result['probs'], result['top'], 1), axis=1) <= 0)

  # The checkpoint was loaded: the maps are not those of a freshly built model.
  fresh = train_step.build_model(config.model, 10, (28, 28, 1), seed=config.seed)
  assert not np.allclose(np.asarray(fresh.class_maps(inputs)), result['maps'], atol=1e-4)


def test_default_png_path_and_bad_input(trained, tmp_path):
  workdir, _ = trained
  png, result = classmap.make_figure(str(workdir), indices=[1, 2], top_k=2)
  assert png == str(workdir / 'class_maps.png') and result['top'].shape == (2, 2)
  assert (workdir / 'class_maps.png').stat().st_size > 10_000
  with pytest.raises(ValueError, match='top_k must be in'):
    classmap.make_figure(str(workdir), indices=[0], top_k=11)
  # The command line turns a wrong workdir into one message.
  bad = run_cli('classmap.py', tmp_path / 'no_run')
  assert bad.returncode == 2 and 'config.json not found' in bad.stderr
  assert 'Traceback' not in bad.stderr
