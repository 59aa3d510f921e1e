"""No silent CPU fallback: TPU chips or NVIDIA GPUs with a CPU-only jax stop the run.

The hardware is simulated by a fake /dev and /proc tree
(config.testing.hardware_root points the detection at it).
"""

import pytest

from conftest import TINY, run_cli
from nin_jax.runtime import accelerators


def fake_root(tmp_path, *files):
  for name in files:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('')
  return str(tmp_path)


@pytest.mark.parametrize('files,found', [
    (('dev/accel0', 'dev/accel1'), 'tpu'),          # TPU v4 VM
    (('dev/vfio/0', 'dev/vfio/vfio'), 'tpu'),       # TPU v5e / v6e VM
    (('proc/driver/nvidia/gpus/0000:00:04.0/information',), 'gpu'),
    (('dev/nvidia0', 'dev/nvidiactl'), 'gpu'),
    (('dev/null', 'dev/vfio/vfio', 'proc/driver/other'), None),  # A plain machine.
])
def test_detects_accelerators_from_the_file_system(tmp_path, files, found):
  assert accelerators.detect(fake_root(tmp_path, *files)) == found


def test_cpu_backend_with_accelerators_present_is_an_error(tmp_path):
  root = fake_root(tmp_path, 'dev/accel0')
  with pytest.raises(ValueError, match=r"has TPU chips but jax .* runs on the CPU.*"
                     r"pip install '\.\[tpu\]'.*--allow_cpu"):
    accelerators.check_backend(root, backend='cpu')
  accelerators.check_backend(root, backend='tpu')  # jax uses them: fine.
  accelerators.check_backend(fake_root(tmp_path / 'plain', 'dev/null'), backend='cpu')


def test_the_run_stops_before_loading_data_unless_allowed(tmp_path):
  root = fake_root(tmp_path / 'machine', 'proc/driver/nvidia/gpus/0/information')
  # A missing dataset directory: loading any data would fail with another error.
  overrides = {**TINY, 'max_steps': 1, 'testing.hardware_root': root,
               'dataset.idx_dir': str(tmp_path / 'no_data')}
  proc = run_cli('fashion_mnist.py', tmp_path / 'run', overrides)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: this machine has NVIDIA GPUs but jax "
      f"{__import__('jax').__version__} runs on the CPU (its GPU backend is not "
      "installed); install it with `pip install '.[cuda12]'` in the repository, or "
      "pass --allow_cpu to train on the CPU anyway")
  allowed = run_cli('fashion_mnist.py', tmp_path / 'run', overrides,
                    extra_args=['--allow_cpu'])
  assert allowed.returncode == 2
  assert 'no_data' in allowed.stderr and 'NVIDIA' not in allowed.stderr  # It got to the data.
