"""Trials of one program trained side by side, in one process (`--parallel=K`).

Trials whose configs differ only in train_step.RUNTIME_FIELDS (learning rate
and schedule, weight decay, momentum, dropout rate, label smoothing, seed)
compile to the same train step: their differences are its Hyperparams
arguments. `plan_groups` puts up to K such trials in a group; `train_group`
trains a group in one process: each trial is a loop.TrainingRun in its own
workdir (so it writes exactly what a run of its own writes: metrics.jsonl,
TensorBoard events, checkpoints, final_metrics.json, the exported model), and
all share the first one's data and compiled steps. The sweep's report, resume
and --dry_run are therefore unchanged.

How the trials share the devices (`placement`, logged at the start):
  - the CPU backend, any number of devices: the one compiled step, called
    once per trial, each trial data-parallel over all the devices and chunked
    exactly as it would be alone (so each is bit-identical to its own run:
    tests/test_trial_group.py, on 1 and on 8 devices). On XLA:CPU that
    measured faster than stepping the trials as one vmap-ed program (grouped
    convolutions): `benchmarks/trial_stepping.py`, 8 trials × 100 steps of
    fashion_mnist at width 0.25 on a 2-core Zen 4, one device: 54.4 s called
    per trial against 80.9 s vmap-ed (1.49×); issue #26 had measured 2.9× for
    vmap and 3.2× for lax.map at K = 8. Simulated CPU devices share the host's
    cores, so splitting the trials over them adds no compute; on 8 of them
    (--devices=8) the calls took 86.5 s (K = 8) and 55.0 s (K = 4), while the
    ('trial', 'data') mesh below deadlocked in XLA:CPU's collectives (a
    rendezvous "only 4 of them arrived", then an abort) in each of 4 tries
    (K = 8 and 4, width 0.25 and 0.125). On several CPU devices each call is
    waited for before the next trial's (see _CallsPerTrial);
  - an accelerator: a ('trial', 'data') mesh. Each chunk stacks the trials'
    states, sharded over 'trial', each trial's batch over the 'data' devices
    of its slice, and one jit of the vmap-ed step trains them all. Trials are
    padded to a multiple of the 'trial' axis with idle lanes. On several
    processes (a multi-host slice) every trial's slice holds an equal share of
    each process's devices (the mesh is ('process', 'trial', 'data')), so
    process p gives each trial the p-th share of its batch, the rows it reads
    for a run of its own, and no input crosses hosts. A trial is then
    within 1e-5 of its own run after one step, not after 20 (float sums in
    another order; the 8-device test says how far).

A trial stops alone: one whose loss or gradients turn NaN/Inf (loop's
NonFiniteError) is marked failed, keeps its last good checkpoint, and the
others go on. Every line a trial prints starts with `[its workdir's name] `,
which is how trials.run_trials tells the members' outcomes apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import json
import math
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from nin_jax.research import sweeps
from nin_jax.research import trials as trials_lib
from nin_jax.runtime import metrics
from nin_jax.runtime import sharding
from nin_jax.runtime import storage
from nin_jax.runtime import user_errors
from nin_jax.runtime import workdir_lock
from nin_jax.train import config as config_lib
from nin_jax.train import loop
from nin_jax.train import train_step
from nin_jax.train.preemption import Preemption

TRIAL_AXIS = 'trial'
# A trial's slice takes an equal share of every process's devices, so each
# process feeds each trial the rows of its batch it reads for a run of its own.
PROCESS_AXIS = 'process'


# ---------------------------------------------------------------------------
# Which trials share a program.


def program_key(config: ml_collections.ConfigDict) -> str:
  """What a trial's compiled step depends on: its config less the runtime fields.

  Whether there is dropout at all stays in it (the rate is a runtime value).
  """
  flat = dict(_flatten(config.to_dict()))
  for field in train_step.RUNTIME_FIELDS:
    flat.pop(field, None)
  flat['model.dropout_rate>0'] = config.model.dropout_rate > 0
  return json.dumps(flat, sort_keys=True, default=str)


def _flatten(d: dict, prefix: str = ''):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _flatten(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def plan_groups(configs: Sequence[ml_collections.ConfigDict], parallel: int) -> list[list[int]]:
  """Trial indices in groups of up to `parallel` sharing a program, in trial order."""
  by_key: dict[str, list[int]] = {}
  for i, config in enumerate(configs):
    by_key.setdefault(program_key(config), []).append(i)
  groups = [members[i:i + parallel] for members in by_key.values()
            for i in range(0, len(members), max(parallel, 1))]
  return sorted(groups, key=lambda g: g[0])


def trial_configs(config: ml_collections.ConfigDict, workdirs: Sequence[str]):
  """Each trial's config: `config` with the overrides its workdir's overrides.json holds."""
  out = []
  for workdir in workdirs:
    record = trials_lib.read_json(storage.workdir_path(workdir) / trials_lib.OVERRIDES_FILE)
    if record is None:
      raise ValueError(f'{workdir} holds no readable {trials_lib.OVERRIDES_FILE}: '
                       'not a trial directory')
    out.append(sweeps.apply_overrides(config, record['overrides']))
  return out


def run_trials(trials: Sequence[trials_lib.Trial], *, config, parallel: int, trainer: str,
               config_path: str, base_args: Sequence[str] = (), stream=sys.stdout
               ) -> dict[str, str]:
  """trials.run_trials, up to `parallel` trials of a program in one process each."""
  groups = plan_groups([sweeps.apply_overrides(config, t.overrides) for t in trials],
                       parallel) if parallel > 1 else None
  return trials_lib.run_trials(
      trials, base_args=base_args, stream=stream, groups=groups,
      group_command=lambda workdirs: trials_lib.group_command(
          trainer, config_path, workdirs, base_args))


# ---------------------------------------------------------------------------
# Where the trials run.


@dataclasses.dataclass(frozen=True)
class Placement:
  """The ('trial', 'data') mesh of a group, or None: one step called per trial."""
  mesh: jax.sharding.Mesh | None
  num_lanes: int  # Trials, padded to a multiple of the 'trial' axis.
  num_devices: int  # All of them: a mesh's, or each called trial's data-parallel run's.

  def describe(self, num_trials: int) -> str:
    if self.mesh is None:
      return (f'{num_trials} trials, each data-parallel over the {self.num_devices} '
              f'{jax.default_backend()} device(s) as alone: one compiled step, called once '
              f'per trial ({CALLS_MEASURED})')
    t, hosts = self.mesh.shape[TRIAL_AXIS], self.mesh.shape[PROCESS_AXIS]
    d = hosts * self.mesh.shape[sharding.DATA_AXIS]
    idle = self.num_lanes - num_trials
    return (f'{num_trials} trials on a mesh of {t} trial × {d} data device(s): '
            f'{self.num_lanes // t} trial(s) per slice of {d} device(s)'
            + (f' ({d // hosts} in each of {hosts} processes)' if hosts > 1 else '')
            + ', vmap-ed in one compiled step'
            + (f' ({idle} idle pad trial(s))' if idle else ''))


STEPPINGS = ('auto', 'calls', 'vmap')
# Why a CPU group calls per trial (benchmarks/trial_stepping.py; the module docstring).
CALLS_MEASURED = ('on XLA:CPU 1.49x faster than one vmap-ed step on 1 device; on 8 simulated '
                  'ones the vmap-ed mesh deadlocked: benchmarks/trial_stepping.py')


def placement(num_trials: int, batch_size: int, backend: str | None = None,
              devices: Sequence[Any] | None = None, stepping: str = 'auto') -> Placement:
  """Per-trial calls on the CPU backend; else the widest 'trial' axis the batch allows.

  `stepping` overrides the choice for measurement (benchmarks/trial_stepping.py):
  'calls' (each trial on all the devices, as alone), 'vmap' (a mesh, even of one device).
  `devices`: in the order of the runs' data-parallel mesh (the group's jits
  take the runs' states, so their device order must be the mesh's).
  """
  if stepping not in STEPPINGS:
    raise ValueError(f'stepping={stepping!r}: choose one of {STEPPINGS}')
  devices = list(jax.devices() if devices is None else devices)
  backend = backend or jax.default_backend()
  n = len(devices)
  if stepping == 'calls' or (stepping == 'auto' and backend == 'cpu'):
    return Placement(None, num_trials, n)
  by_process = _by_process(devices)
  local = len(by_process[0])
  # A slice takes local / t devices of each process, and its batch spreads
  # over its n / t devices: that must divide the batch.
  fits = [t for t in range(1, local + 1) if local % t == 0 and batch_size % (n // t) == 0]
  if not fits:
    raise ValueError(f'optim.batch_size={batch_size} divides over none of the ways to split '
                     f'{n} devices into trial slices; use a multiple of {n}')
  t = max([t for t in fits if t <= num_trials] or [min(fits)])
  mesh = jax.sharding.Mesh(np.array(by_process).reshape(len(by_process), t, local // t),
                           (PROCESS_AXIS, TRIAL_AXIS, sharding.DATA_AXIS))
  return Placement(mesh, math.ceil(num_trials / t) * t, n)


def _by_process(devices: Sequence[Any]) -> list[list[Any]]:
  """The devices, one list per process, as consecutive blocks of `devices`."""
  blocks: dict[int, list[Any]] = {}
  for d in devices:
    blocks.setdefault(d.process_index, []).append(d)
  out = list(blocks.values())
  if [d for block in out for d in block] != list(devices) or len({len(b) for b in out}) > 1:
    raise ValueError('a trial mesh needs every process to own an equal, consecutive block '
                     'of the devices (the data-parallel mesh orders them so)')
  return out


# ---------------------------------------------------------------------------
# A member of the group: its TrainingRun, and its lines prefixed with its name.


@dataclasses.dataclass
class _Member:
  name: str
  run: loop.TrainingRun | None = None
  failed: str = ''

  def speaking(self):
    """Lines printed in this block start with `[name] `."""
    return contextlib.redirect_stdout(_Prefixed(f'[{self.name}] ', sys.stdout))

  @property
  def active(self) -> bool:
    return not self.failed and self.run.step < self.run.plan.end_step


class _Prefixed(io.TextIOBase):
  """A stream that starts each line with the trial's name."""

  def __init__(self, prefix: str, stream):
    self._prefix, self._stream = prefix, stream

  def write(self, text: str) -> int:
    self._stream.write(''.join(f'{self._prefix}{line}' if line.strip() else line
                               for line in text.splitlines(keepends=True)))
    return len(text)

  def flush(self) -> None:
    self._stream.flush()


# ---------------------------------------------------------------------------
# Stepping the trials: per-trial calls of one compiled step, or one vmap-ed step.


class _CallsPerTrial:
  """Each trial's chunk is one call of the shared compiled step, as its own run's.

  On several XLA:CPU devices each call is waited for before the next trial's:
  two trials' data-parallel calls in flight at once (independent, so XLA may
  run them together) deadlocked in an all-reduce (8 simulated devices: "only
  7 of them arrived", then the process aborted).
  """

  def __init__(self, members: list[_Member], place: Placement):
    del place
    data_parallel = members[0].run.data_parallel
    self._one_at_a_time = data_parallel.num_devices > 1 and jax.default_backend() == 'cpu'

  def advance(self, active: list[_Member]) -> None:
    for m in active:
      m.run.run_chunk(m.run.next_chunk())
      if self._one_at_a_time:
        jax.block_until_ready(m.run.state)


class _TrialMesh:
  """A ('trial', 'data') mesh: the trials' states stacked, one vmap-ed step for all.

  Lane l trains member l; lanes past the last member (padding to the mesh's
  trial axis) and stopped members' lanes compute a step whose result is
  selected away. A chunk is as long as the shortest of the active members'.
  """

  def __init__(self, members: list[_Member], place: Placement):
    mesh, first = place.mesh, members[0].run
    self._members = members
    self._lanes = list(range(len(members))) + [0] * (place.num_lanes - len(members))
    self._by_trial = NamedSharding(mesh, P(TRIAL_AXIS))
    rows = (PROCESS_AXIS, sharding.DATA_AXIS)  # Process p's devices take its rows.
    self._batch = {False: NamedSharding(mesh, P(TRIAL_AXIS, rows)),
                   True: NamedSharding(mesh, P(TRIAL_AXIS, None, rows))}
    self._stack = jax.jit(lambda *trees: jax.tree.map(lambda *x: jnp.stack(x), *trees),
                          out_shardings=self._by_trial)
    # One program each way per chunk: on several XLA:CPU devices, independent
    # programs in flight together (one take per lane) deadlocked in an all-gather.
    self._unstack = jax.jit(
        lambda tree: [jax.tree.map(lambda x: x[i], tree) for i in range(len(members))],
        out_shardings=first.data_parallel.replicated)
    self._hparams = self._stack(*[members[l].run.hparams for l in self._lanes])
    self._device_data = (None if first.device_data is None else
                         jax.device_put(first.device_data, NamedSharding(mesh, P())))
    self._steps = {stacked: jax.jit(
        functools.partial(_lanes_step, first.statics, stacked),
        out_shardings=(self._by_trial, self._by_trial), donate_argnums=(1, 2))
        for stacked in (False, True)}

  def advance(self, active: list[_Member]) -> None:
    n = min(m.run.next_chunk() for m in active)
    rows = {id(m): m.run.next_batches(n) for m in active}
    idle = jax.tree.map(np.zeros_like, next(iter(rows.values())))
    lanes = [self._members[l] for l in self._lanes]
    on = np.array([id(m) in rows and lane == l for lane, (l, m) in
                   enumerate(zip(self._lanes, lanes))])
    batches = jax.tree.map(lambda *x: np.stack(x), *[
        rows[id(m)] if used else idle for used, m in zip(on, lanes)])
    batch_axis = 2 if n > 1 else 1  # After the lane axis (and the step axis).
    stacked = self._steps[n > 1](
        sharding.from_process_rows(self._by_trial, on, None),
        *self._stack(*[(m.run.state, m.run.sums) for m in lanes]),
        jax.tree.map(lambda x: sharding.from_process_rows(self._batch[n > 1], x, batch_axis),
                     batches),
        self._device_data, self._hparams)
    for m, (state, sums) in zip(self._members, self._unstack(stacked)):
      if id(m) in rows:
        m.run.state, m.run.sums = state, sums
        m.run.step += n


def _lanes_step(statics, stacked: bool, active, states, sums, batches, device_data, hparams):
  """train_step (or the k-step scan) of every lane; an inactive lane's state is kept."""
  step = train_step.train_steps if stacked else train_step.train_step

  def lane(active, state, sums, batch, hp):
    new = step(statics, state, sums, batch, device_data, hp)
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, (state, sums))
  return jax.vmap(lane)(active, states, sums, batches, hparams)


# ---------------------------------------------------------------------------
# The group's loop.


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], *,
                allow_config_change: bool = False, stepping: str = 'auto') -> list[dict]:
  """Trains trials that share a program side by side; returns each one's result.

  A result is what loop.train_and_evaluate returns, with 'name' and 'failed'
  (the error, e.g. NaN/Inf, where that trial stopped alone; '' otherwise).
  `stepping`: see `placement`.
  """
  _check_group(configs)
  user_errors.quiet_library_noise()
  with contextlib.ExitStack() as locks:
    members = _open_members(configs, workdirs, allow_config_change, locks)
    place = placement(len(members), configs[0].optim.batch_size, stepping=stepping,
                      devices=list(members[0].run.data_parallel.mesh.devices.flat))
    metrics.console(place.describe(len(members)))
    stepper = (_CallsPerTrial if place.mesh is None else _TrialMesh)(members, place)
    with Preemption() as preemption, contextlib.ExitStack() as writers:
      for m in members:  # Leaving flushes each trial's writes.
        writers.enter_context(m.run.writer)
      _train(members, stepper, preemption)
    return [_finish(m, preemption) for m in members]


def _check_group(configs) -> None:
  if len({program_key(c) for c in configs}) > 1:
    raise ValueError('the trials of a group must differ only in '
                     f'{", ".join(train_step.RUNTIME_FIELDS)}')
  for config in configs:
    config_lib.validate(config)


def _open_members(configs, workdirs, allow_config_change: bool,
                  locks: contextlib.ExitStack) -> list[_Member]:
  """Each trial's TrainingRun, opened under its workdir's lock; the first loads the data."""
  members = []
  for config, workdir in zip(configs, workdirs):
    workdir = storage.workdir_path(workdir)
    loop.check_workdir(workdir)
    locks.enter_context(workdir_lock.held(str(workdir)))
    member = _Member(workdir.name)
    with member.speaking():
      member.run = loop.TrainingRun.open(
          config, workdir, None, allow_config_change,
          shared_with=members[0].run if members else None)
    members.append(member)
  return members


def _train(members: list[_Member], stepper, preemption: Preemption) -> None:
  """Steps the active trials chunk by chunk, each to its end, a NaN trial stopping alone."""
  for chunk in itertools.count():
    if not (active := [m for m in members if m.active]):
      return
    stepper.advance(active)
    # Every process counts the same chunks: on several, they agree to stop at one.
    stop = preemption.should_stop(chunk)
    for m in active:
      with m.speaking():
        try:
          m.run.after_chunk(stop)
        except loop.NonFiniteError as e:
          m.failed = str(e)
          print(f'error: {e} This trial stopped; the others go on.', flush=True)
    if stop:
      if preemption.signal != 'SIGINT':
        logging.warning('preempted: checkpoints written; rerun to resume')
      return


def _finish(m: _Member, preemption: Preemption) -> dict:
  """A trial's run closed; at its end, with its final files (none for a failed one)."""
  with m.speaking():
    if m.failed:
      m.run.checkpointer.close()
      m.run.writer.close()
      return {'name': m.name, 'step': m.run.step, 'failed': m.failed, 'preempted': False,
              'signal': None}
    return {'name': m.name, 'failed': '', **m.run.finish(preemption)}
