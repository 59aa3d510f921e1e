"""docs/install.md's SLURM recipe, as pasted, on a real one-node SLURM (tests/slurm_cluster.py).

The batch script is read out of docs/install.md. Only what a GPU cluster has and
this machine has not is changed (nodes, tasks, GPUs, paths, the CIFAR-10 batch),
each change asserted, so the test breaks when the page's script does. The job
runs two tasks that find each other through SLURM's environment, is preempted
with SIGTERM (what `--signal=TERM@120` sends at the time limit), and the same
script submitted again resumes the run.
"""

import os
import re
import sys

import pytest

from conftest import REPO, TINY
from readme_blocks import edited, readme_block
import slurm_cluster

pytestmark = pytest.mark.skipif(slurm_cluster.missing() is not None,
                                reason=str(slurm_cluster.missing()))


def documented_sbatch_script() -> str:
  return readme_block('#!/bin/bash\n#SBATCH --job-name=nin-cifar10\n', page='docs/install.md')


def on_this_machine(script: str, workdir) -> str:
  nin_train = os.path.join(os.path.dirname(sys.executable), 'nin-train')
  assert os.path.exists(nin_train), 'install the package: pip install -e .'
  tiny = {**TINY, 'num_epochs': 25.0, 'log_every_steps': 2, 'checkpoint_every_steps': 1000}
  tiny.pop('optim.batch_size')
  changes = [
      ('#SBATCH --nodes=2\n', '#SBATCH --nodes=1\n'),
      ('#SBATCH --ntasks-per-node=8\n', '#SBATCH --ntasks-per-node=2\n'),
      ('#SBATCH --gpus-per-node=8\n', ''),
      ('#SBATCH --cpus-per-task=8\n', '#SBATCH --cpus-per-task=1\n'),
      ('cd $HOME/nin_jax\n', f'cd {REPO}\nexport JAX_PLATFORMS=cpu\n'),
      ('srun .venv/bin/nin-train --config=cifar10 ',
       f'srun {nin_train} --config=fashion_mnist '),
      ('--workdir=/shared/$USER/nin/cifar10_16gpu', f'--workdir={workdir}'),
      ('--config.optim.batch_size=1024', '--config.optim.batch_size=64'),
      ('--heartbeat_timeout_s=120\n', '--heartbeat_timeout_s=120 ' + ' '.join(
          f'--config.{k}={v}' for k, v in tiny.items()) + '\n'),
  ]
  return edited(script, changes)


@pytest.fixture
def cluster(tmp_path):
  cluster = slurm_cluster.SlurmCluster(tmp_path / 'slurm')
  yield cluster
  cluster.stop()


def test_the_documented_sbatch_script_trains_is_preempted_and_resumes(cluster, tmp_path):
  script = tmp_path / 'nin.sbatch'
  script.write_text(on_this_machine(documented_sbatch_script(), tmp_path / 'run'))
  out = lambda job: (tmp_path / f'slurm-{job}.out').read_text()

  first = cluster.sbatch(script, cwd=tmp_path)
  cluster.wait_for(lambda: os.path.exists(tmp_path / f'slurm-{first}.out')
                   and 'step 4/200' in out(first), 'two logged steps', timeout=300)
  cluster.signal(first, 'TERM')  # What --signal=TERM@120 sends before the time limit.
  assert cluster.wait(first) == 'COMPLETED', out(first)[-3000:]
  text = out(first)
  print(text[-1500:])
  assert '2 cpu device(s) in 2 process(es)' in text  # The two tasks found each other.
  preempted = re.findall(r'preempted: checkpoint at step (\d+) written', text)
  assert len(preempted) == 2 and preempted[0] == preempted[1], text[-3000:]  # Agreed.

  again = cluster.sbatch(script, cwd=tmp_path)  # The same script, submitted again.
  assert cluster.wait(again) == 'COMPLETED', out(again)[-3000:]
  text = out(again)
  print(text[-1500:])
  assert f'resuming at step {preempted[0]} of 200' in text
  assert text.count('final test accuracy') == 2
