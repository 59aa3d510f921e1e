"""Predict and export: a trained run predicts from uint8 images with no dataset access,
and its jax.export-ed model gives the same probabilities in a fresh process."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, make_tiny_config
from nin_jax.data import datasets
from nin_jax.data import input_pipeline
from nin_jax.train import predict

pytestmark = pytest.mark.core


@pytest.fixture
def run(trained_tiny_run):
  return trained_tiny_run


def test_predict_load_needs_no_dataset(run, monkeypatch):
  workdir, config = run
  raw, _ = datasets.load_arrays('fashion_mnist', 'test', source='idx')
  raw = np.asarray(raw[:6])
  expected_inputs = _first_test_images(config, 6)  # preprocessed as training does

  def no_dataset(*args, **kwargs):
    raise AssertionError('predict read the dataset')
  monkeypatch.setattr(datasets, 'load_arrays', no_dataset)
  predictor = predict.load(str(workdir))
  probs = predictor(raw)

  assert probs.shape == (6, 10) and predictor.step == 8
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert predictor.class_names[0] == 'T-shirt/top'
  # The saved statistics preprocess exactly as training did (the standardised test split).
  np.testing.assert_allclose(predictor.preprocess(raw), expected_inputs,
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='uint8'):
    predictor(raw.astype(np.float32))
  with pytest.raises(ValueError, match=r'this model takes \(28, 28, 1\)'):
    predictor(np.zeros((1, 32, 32, 3), np.uint8))


def _first_test_images(config, n):
  full = make_tiny_config(**{'dataset.test_subset': 0})
  return input_pipeline.load(full.dataset).test_images[:n]


def test_exported_model_matches_in_a_fresh_process(run, tmp_path):
  workdir, _ = run
  exported = workdir / 'inference' / predict.EXPORTED
  assert exported.exists()
  predictor = predict.load(str(workdir))
  raw, _ = datasets.load_arrays('fashion_mnist', 'test', source='idx')
  inputs = predictor.preprocess(np.asarray(raw[:5]))
  np.save(tmp_path / 'inputs.npy', inputs)
  # Only jax and numpy in the fresh process: the exported function needs no nin_jax.
  code = ('import sys, numpy as np, jax\n'
          f'exp = jax.export.deserialize(bytearray(open({str(exported)!r}, "rb").read()))\n'
          f'np.save({str(tmp_path / "probs.npy")!r}, np.asarray(exp.call(np.load({str(tmp_path / "inputs.npy")!r}))))\n'
          'assert not any(m.startswith("nin_jax") for m in sys.modules)\n')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  fresh = np.load(tmp_path / 'probs.npy')
  np.testing.assert_allclose(fresh, predictor(np.asarray(raw[:5])), rtol=1e-5, atol=1e-6)
