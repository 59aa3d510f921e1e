"""--parallel: trials sharing a program train side by side, each as its own run would."""

import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, TINY, make_tiny_config, run_cli
from test_reliability import Run, comparable_records
from test_sweeps import quickstart_sweep_config, read_csv, sweep_in_process
from nin_jax.research import trial_group
from nin_jax.runtime import checkpoint
from nin_jax.train import loop as train
from nin_jax.train import predict

# Dropout and augmentation on; 20 steps (512 images, batch 64: 8 per epoch).
GROUP_BASE = {'augment.translate': 2, 'augment.flip': True, 'model.dropout_rate': 0.3,
              'num_epochs': 2.5}
# Four trials of one program: learning rate, weight decay and seed differ.
TRIALS = [{'optim.learning_rate': lr, 'optim.weight_decay': wd, 'seed': seed}
          for lr, wd, seed in ((0.05, 1e-4, 0), (0.02, 0.0, 1), (0.1, 5e-4, 2), (0.03, 1e-3, 3))]


def max_relative_difference(workdir_a, workdir_b) -> float:
  """max over parameter arrays of max|a - b| / max|b|, at the two runs' last checkpoints."""
  a, b = checkpoint.load_for_inspection(workdir_a), checkpoint.load_for_inspection(workdir_b)
  assert int(a['step']) == int(b['step'])
  return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
             for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])))


def group_against_sequential(root: str) -> list[float]:
  """Trains TRIALS as one group and each alone; each trial's max relative difference."""
  configs = [make_tiny_config(**GROUP_BASE, **t) for t in TRIALS]
  results = trial_group.train_group(configs, [f'{root}/group/{i}' for i in range(len(configs))])
  assert all(r['step'] == 20 and not r['failed'] for r in results)
  for i, config in enumerate(configs):
    train.train_and_evaluate(config, f'{root}/alone/{i}')
  return [max_relative_difference(f'{root}/group/{i}', f'{root}/alone/{i}')
          for i in range(len(configs))]


def test_trials_differing_in_runtime_fields_share_a_group_and_others_do_not():
  configs = [make_tiny_config(**t) for t in TRIALS] + [
      make_tiny_config(**{'model.width_multiplier': 0.25}),
      make_tiny_config(**{'model.dropout_rate': 0.3})]  # Dropout on: another program.
  assert trial_group.plan_groups(configs, 4) == [[0, 1, 2, 3], [4], [5]]
  assert trial_group.plan_groups(configs, 3) == [[0, 1, 2], [3], [4], [5]]


def test_cpu_devices_call_the_step_per_trial_unless_told_to_vmap():
  """The placement a group takes: per-trial calls on the CPU backend, a mesh elsewhere."""
  cpu = jax.devices('cpu')[:1]
  assert trial_group.placement(4, 128, 'cpu', cpu).mesh is None
  # Several CPU devices too (only their count matters to the calls placement).
  eight = trial_group.placement(4, 128, 'cpu', cpu * 8)
  assert eight.mesh is None and eight.num_devices == 8 and eight.num_lanes == 4
  forced = trial_group.placement(4, 128, 'cpu', cpu, stepping='vmap')
  one = {'process': 1, 'trial': 1, 'data': 1}
  assert dict(forced.mesh.shape) == one and forced.num_lanes == 4
  assert dict(trial_group.placement(4, 128, 'gpu', cpu).mesh.shape) == one
  with pytest.raises(ValueError, match="stepping='sideways'"):
    trial_group.placement(4, 128, 'cpu', cpu, stepping='sideways')


def test_each_trial_of_a_group_of_four_is_its_own_run_on_one_device(tmp_path):
  # On one CPU device each trial is a call of the very step its own run compiles
  # (its Hyperparams are arguments in both), chunked as alone: bit-identical.
  differences = group_against_sequential(str(tmp_path))
  print('max relative parameter differences, 1 device:', differences)
  assert differences == [0.0] * len(TRIALS)


# Runs in a process of 8 simulated CPU devices: TRIALS as a group (default
# placement, then stepping='vmap') and each alone, for 1 and for 20 steps;
# prints each trial's max relative parameter difference, per stepping and steps.
EIGHT_DEVICES = f'''
import json, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from conftest import make_tiny_config
from test_trial_group import GROUP_BASE, TRIALS, max_relative_difference
from nin_jax.research import trial_group
from nin_jax.train import loop
out = {{'auto': {{}}, 'vmap': {{}}}}
for steps in (1, 20):
  configs = [make_tiny_config(**GROUP_BASE, **t, max_steps=steps) for t in TRIALS]
  alone = [f'{{sys.argv[1]}}/{{steps}}/alone/{{i}}' for i in range(len(configs))]
  for config, workdir in zip(configs, alone):
    loop.train_and_evaluate(config, workdir)
  for stepping in out:
    group = [f'{{sys.argv[1]}}/{{steps}}/{{stepping}}/{{i}}' for i in range(len(configs))]
    trial_group.train_group(configs, group, stepping=stepping)
    out[stepping][steps] = [max_relative_difference(g, a) for g, a in zip(group, alone)]
print('DIFFERENCES', json.dumps(out))
'''


@pytest.fixture(scope='module')
def on_eight_devices(tmp_path_factory):
  """EIGHT_DEVICES' stdout and differences: {stepping: {'1' | '20': [per trial]}}."""
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  proc = subprocess.run([sys.executable, '-c', EIGHT_DEVICES,
                         str(tmp_path_factory.mktemp('eight_devices'))], env=env,
                        capture_output=True, text=True, timeout=1200, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  differences = json.loads(proc.stdout.split('DIFFERENCES ')[1])
  print('max relative parameter differences, 8 devices:', differences)
  return proc.stdout, differences


def test_on_eight_cpu_devices_each_trial_of_a_group_of_four_is_its_own_run(on_eight_devices):
  """The CPU default: each trial's chunk is a call of its own run's step on all 8 devices.

  Same program, same data-parallel mesh, same batches and Hyperparams as the
  trial alone: bit-identical after 20 steps (the issue asks for 1e-5).
  """
  stdout, differences = on_eight_devices
  assert ('4 trials, each data-parallel over the 8 cpu device(s) as alone: one compiled '
          'step, called once per trial') in stdout
  assert differences['auto'] == {'1': [0.0] * len(TRIALS), '20': [0.0] * len(TRIALS)}


def test_on_eight_devices_a_vmapped_trial_matches_its_run_for_a_step_then_drifts(
    on_eight_devices):
  """On a ('trial', 'data') mesh (stepping='vmap', what an accelerator takes) a
  trial is not bit-identical to its own run.

  Its batch is split over its slice's 2 devices (its own run's over all 8)
  and its convolutions are vmap-ed over the trials, so float32 sums round in
  another order. After one step each trial is within 1e-5 of its own run
  (measured 2e-6..8e-6): right data, masks and hyperparameters. Over 20 steps
  this tiny batch-norm net (ReLU, max-pool decisions) amplifies the rounding,
  as it does a run's own 1- against 8-device difference (4e-3..4e-2 for these
  trials; cf. test_train.test_eight_devices_match_one_device): measured
  [0.16, 0.027, 0.041, 9.6e-5] (jax 0.10.2; the same before and after the
  group's unstacking became one program; an earlier measurement, 1e-3..4e-2,
  had set this bound at 5e-2). So 1e-5 after 20 steps holds for the per-trial
  calls (the CPU default, above), not here; a smaller learning rate (0.1×) did
  not keep it either. A trial given another's data or hyperparameters is off
  by far more.
  """
  stdout, differences = on_eight_devices
  assert '4 trials on a mesh of 4 trial × 2 data device(s)' in stdout
  assert max(differences['vmap']['1']) <= 1e-5
  assert max(differences['vmap']['20']) <= 0.25


# Two trials of one program (the second turns NaN at step 2) and one of another.
GROUP_SWEEP = quickstart_sweep_config(
    "[{'optim.learning_rate': 0.05},\n"
    "          {'optim.learning_rate': 0.1, 'testing.inject_nan_at_step': 2},\n"
    "          {'model.width_multiplier': 0.25}]")


def test_parallel_sweep_runs_a_group_in_one_process_and_a_nan_trial_fails_alone(tmp_path):
  config_path = tmp_path / 'group_sweep.py'
  config_path.write_text(GROUP_SWEEP)
  workdir = tmp_path / 'sweep'
  not_done, out = sweep_in_process(config_path, workdir, parallel=2)
  print(out)
  assert not_done == 1
  group = ['trial_000_lr=0.05', 'trial_001_lr=0.1_inject_nan_at_step=2']
  alone = 'trial_002_width=0.25'
  assert f'[1/3] {group[0]}, [2/3] {group[1]}: running side by side' in out
  assert f'[3/3] {alone}: running (log:' in out
  # A member writes an ordinary run's files: final metrics, checkpoints, a model
  # predict.load reads, its config.
  assert (workdir / group[0] / 'final_metrics.json').exists()
  assert (workdir / group[0] / 'checkpoints').is_dir()
  assert predict.load(workdir / group[0]).config.optim.learning_rate == 0.05
  failed = json.loads((workdir / group[1] / 'status.json').read_text())
  assert failed['status'] == 'failed'
  assert 'loss or gradients became NaN/Inf at step 2' in failed['error_tail']
  assert not (workdir / group[1] / 'final_metrics.json').exists()
  assert json.loads((workdir / alone / 'status.json').read_text())['status'] == 'done'
  rows = {r['trial']: r for r in read_csv(workdir / 'results.csv')}
  assert [rows[n]['status'] for n in (*group, alone)] == ['done', 'failed', 'done']


def trial_dirs(root, trials) -> list[str]:
  """Trial directories as nin-sweep leaves them for a group: each with its overrides.json."""
  workdirs = []
  for i, overrides in enumerate(trials):
    workdir = root / f'trial_{i}'
    workdir.mkdir(parents=True)
    (workdir / 'overrides.json').write_text(json.dumps(
        {'index': i, 'overrides': overrides, 'base_overrides': []}))
    workdirs.append(str(workdir))
  return workdirs


def test_sigkill_during_a_group_then_resume_is_bit_identical(tmp_path):
  # Two trials of GROUP_BASE (20 steps, checkpoints every 4) as `--trial_workdir`s.
  # Each trial pauses after steps 6 and 10 (test-only): killed at trial_0's
  # first pause, then at trial_1's second; every relaunch is the same command.
  flags = {**TINY, **GROUP_BASE}
  reference = trial_dirs(tmp_path / 'reference', TRIALS[:2])
  proc = run_cli('fashion_mnist.py', None, flags,
                 extra_args=[f'--trial_workdir={w}' for w in reference])
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdirs = trial_dirs(tmp_path / 'killed', TRIALS[:2])
  kill_at, launches = [('trial_0', 6), ('trial_1', 10)], []
  while True:
    run = Run(tmp_path / 'killed', {**flags, 'testing.pause_at_steps': '(6, 10)'},
              extra_args=[f'--trial_workdir={w}' for w in workdirs])
    while (step := run.wait_for_pause()) is not None:
      paused = (run.stdout[-1][1:].split(']')[0], step)
      if paused in kill_at:
        break
      run.resume()  # Killed here in an earlier launch: go on.
    launches.append([int(m.group(1)) for m in re.finditer(
        r'(?:starting|resuming) at step (\d+) of 20', run.text)])
    if step is None:
      assert run.finish() == 0, run.stderr[-3000:]
      break
    kill_at.remove(paused)
    assert run.kill() == -signal.SIGKILL
  print('each launch started the trials at', launches)
  assert kill_at == []
  # trial_0 resumes from its step-4 checkpoint; trial_1's may still have been in
  # flight at the first kill (then it restarts from 0 and trial_0 runs ahead of it,
  # each trial resuming from its own checkpoint). trial_1 waited for its step-8 one.
  assert launches[0] == [0, 0] and launches[1][0] == 4 and launches[1][1] in (0, 4)
  assert launches[2][0] in (8, 12) and launches[2][1] == 8
  for done, ref in zip(workdirs, reference):
    assert max_relative_difference(done, ref) == 0.0
    with open(os.path.join(ref, 'final_metrics.json')) as a, \
         open(os.path.join(done, 'final_metrics.json')) as b:
      assert json.load(a) == json.load(b)
    assert comparable_records(done) == comparable_records(ref)


# Runs in each process of a 2-process `jax.distributed` run (2 CPU devices
# each): TRIALS as a group (default placement for 20 steps, stepping='vmap' for
# 1) and each alone on all 4 devices; process 0 prints the differences.
TWO_PROCESSES = f'''
import json, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import jax
from conftest import make_tiny_config
from test_trial_group import GROUP_BASE, TRIALS, max_relative_difference
from nin_jax.research import trial_group
from nin_jax.runtime import sharding
from nin_jax.train import loop
sharding.maybe_initialize_distributed()  # From JAX_COORDINATOR_ADDRESS etc.
root = next(a for a in sys.argv if a.startswith('--workdir=')).split('=', 1)[1]
out = {{}}
for stepping, steps in (('auto', 20), ('vmap', 1)):
  configs = [make_tiny_config(**GROUP_BASE, **t, max_steps=steps) for t in TRIALS]
  alone = [f'{{root}}/{{stepping}}/alone/{{i}}' for i in range(len(configs))]
  for config, workdir in zip(configs, alone):
    loop.train_and_evaluate(config, workdir)
  group = [f'{{root}}/{{stepping}}/group/{{i}}' for i in range(len(configs))]
  trial_group.train_group(configs, group, stepping=stepping)
  out[stepping] = [max_relative_difference(g, a) for g, a in zip(group, alone)]
if jax.process_index() == 0:
  print('DIFFERENCES', json.dumps(out))
'''


@pytest.mark.cpu_processes
def test_on_two_processes_a_group_trains_each_trial_as_its_run(tmp_path):
  """A multi-host slice: one group process per host, the trials shared by all.

  The CPU default calls each trial's step on all 4 devices of the 2 processes,
  as its own 2-process run does: bit-identical after 20 steps. On the trial
  mesh (stepping='vmap', what accelerators take) each trial's slice holds one
  device of each process, so each process feeds every trial the rows it
  reads for the trial alone; within 1e-5 of its own run after one step (a
  trial given another's rows, or another's hyperparameters, is off by far more).
  """
  from test_multihost import run_pair
  script = tmp_path / 'group_on_two_processes.py'
  script.write_text(TWO_PROCESSES)
  pair = run_pair(tmp_path / 'runs', {}, tmp_path / 'logs', script=str(script))
  stdout = pair.stdout(0)
  differences = json.loads(stdout.split('DIFFERENCES ')[1])
  print('max relative parameter differences, 2 processes × 2 devices:', differences)
  assert ('4 trials, each data-parallel over the 4 cpu device(s) as alone: one compiled '
          'step, called once per trial') in stdout
  assert ('4 trials on a mesh of 2 trial × 2 data device(s): 2 trial(s) per slice of 2 '
          'device(s) (1 in each of 2 processes), vmap-ed in one compiled step') in stdout
  assert differences['auto'] == [0.0] * len(TRIALS)
  assert max(differences['vmap']) <= 1e-5
  assert 'DIFFERENCES' not in pair.stdout(1)  # Only process 0 reports.
