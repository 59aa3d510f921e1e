"""Devices, the data-parallel mesh, and process-local → global batches.

One 1-D mesh over every device of every process, axis 'data'. Batches are
sharded along it; the train state is replicated. The same code serves 1 CPU, 8
simulated CPU devices, a GPU node and a multi-host TPU pod: under JAX's
multi-controller model each process feeds only its own share of each global
batch and `jax.make_array_from_process_local_data` stitches the global array.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
import zlib

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from nin_jax.runtime import host_errors

DATA_AXIS = 'data'


def maybe_initialize_distributed(coordinator_address: str = '',
                                 num_processes: int = 0,
                                 process_id: int = -1,
                                 heartbeat_timeout_s: int = 0) -> None:
  """Starts `jax.distributed` when this run spans several processes.

  Explicit arguments win (the command-line flags). Otherwise jax's own
  auto-detection decides: `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES`
  and `JAX_PROCESS_ID`, read here: jax reads only the address), SLURM steps,
  Open MPI, Cloud TPU VMs and GKE TPU pods, Kubernetes indexed Jobs. Only where
  jax finds none of them is the run one plain process. The one exception: a
  SLURM step of a single task stays a plain process, because jax would pin it
  to the one GPU numbered SLURM_LOCALID and leave the node's others idle.
  """
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  if heartbeat_timeout_s:
    # A dead peer is noticed within this many seconds instead of hanging.
    kwargs['heartbeat_timeout_seconds'] = heartbeat_timeout_s
  if coordinator_address or num_processes > 1:
    if not (coordinator_address and num_processes > 1 and process_id >= 0):
      raise ValueError(
          'a multi-process run needs all of --coordinator_address, '
          '--num_processes (>1) and --process_id (>=0); got '
          f'{coordinator_address!r}, {num_processes}, {process_id}')
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               **kwargs)
  elif _one_task_slurm_step() or not _initialize_from_environment(kwargs):
    return  # One plain process.
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  if jax.process_count() > 1:
    host_errors.watch()
    _warn_of_cpu_collective_hang()


def _warn_of_cpu_collective_hang() -> None:
  """jax 0.12's XLA:CPU can hang a multi-process run; say so where it starts."""
  if jax.default_backend() != 'cpu' or tuple(jax.__version_info__[:2]) < (0, 12):
    return
  # Seen with jax 0.12.1: every process waits in a Gloo all-reduce of one
  # train step, about every second 2-process run (docs/reliability.md).
  logging.warning(
      'jax %s on CPU with %d processes: its XLA:CPU has been seen to hang in a '
      'Gloo all-reduce (jax 0.10.2 did not; 0.11 is untested); if steps stop coming, use '
      'jax 0.10 for multi-process CPU runs', jax.__version__, jax.process_count())


# What jax.distributed.initialize() raises where its auto-detection finds no
# cluster and JAX_COORDINATOR_ADDRESS is unset (jax 0.10 to 0.12; a test pins it).
_NO_CLUSTER = 'coordinator_address should be defined'


def _initialize_from_environment(kwargs) -> bool:
  """jax.distributed.initialize() by jax's auto-detection; False where it finds no cluster."""
  layout = _process_layout_from_env()
  try:
    jax.distributed.initialize(**layout, **kwargs)
    return True
  except ValueError as e:
    address = os.environ.get('JAX_COORDINATOR_ADDRESS')
    if address:
      raise ValueError(f'jax.distributed with JAX_COORDINATOR_ADDRESS={address}: {e} Set '
                       'JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process too (got '
                       f'{os.environ.get("JAX_NUM_PROCESSES")!r}, '
                       f'{os.environ.get("JAX_PROCESS_ID")!r})') from None
    if not str(e).startswith(_NO_CLUSTER):
      raise
    if layout:
      raise ValueError('JAX_NUM_PROCESSES / JAX_PROCESS_ID are set but no coordinator '
                       'is: set JAX_COORDINATOR_ADDRESS=host:port of process 0 too') from None
    return False


def _process_layout_from_env() -> dict[str, int]:
  """num_processes / process_id from JAX_NUM_PROCESSES / JAX_PROCESS_ID, where set."""
  layout = {}
  for var, arg in (('JAX_NUM_PROCESSES', 'num_processes'), ('JAX_PROCESS_ID', 'process_id')):
    value = os.environ.get(var, '').strip()
    if value:
      try:
        layout[arg] = int(value)
      except ValueError:
        raise ValueError(f'{var}={value!r} is not a whole number') from None
  return layout


def _one_task_slurm_step() -> bool:
  env = os.environ
  return (env.get('SLURM_NTASKS', '').strip() == '1' and 'SLURM_STEP_NODELIST' in env
          and not env.get('JAX_COORDINATOR_ADDRESS'))


def is_multiprocess() -> bool:
  return jax.distributed.is_initialized() and jax.process_count() > 1


def exit_after_failure(exc: BaseException) -> None:
  """Multi-process: reports `exc` in plain words on every process; all exit.

  A dead peer makes this process's next collective fail (or JAX's heartbeat
  check abort it); an error of this process alone (its lock, its writer)
  would leave the others waiting in their next collective. So the message
  goes to every process, and each prints it and exits at once, skipping
  jax.distributed's shutdown barrier, which would wait for a peer that is gone.
  """
  traceback.print_exception(exc)
  detail = (str(exc).strip().splitlines() or [''])[0][:300]
  host_errors.stop_everywhere(
      f'error: process {jax.process_index()} of {jax.process_count()} stopped: '
      f'{type(exc).__name__}: {detail}\nIf another process of this run died, was '
      'preempted or lost its network connection, that is the cause: see its log. '
      'Restart every process with the same command to resume from the last '
      'checkpoint.', code=1)


def gather_from_processes(value: int) -> list[int]:
  """Every process's `value`, in process order, on every process.

  One small all-gather that all processes must call together: how they agree
  on a decision that depends on what each host sees.
  """
  if jax.process_count() == 1:
    return [int(value)]
  from jax.experimental import multihost_utils
  return [int(v) for v in multihost_utils.process_allgather(np.int32(value))]


def from_process_rows(sharding: NamedSharding, rows, axis: int | None):
  """This process's rows (numpy) → one global jax.Array, placed by `sharding`.

  Along `axis` each process holds its own consecutive share (process p the
  p-th), so the global array is process_count times as long there; along the
  other axes every process holds all of it. `axis=None`: every process holds
  the same whole value, and nothing crosses hosts.
  """
  rows = np.asarray(rows)
  global_shape = list(rows.shape)
  if axis is not None:
    global_shape[axis] *= jax.process_count()
  return jax.make_array_from_process_local_data(sharding, rows, tuple(global_shape))


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """The mesh and the two shardings a data-parallel run needs."""
  mesh: jax.sharding.Mesh

  @classmethod
  def create(cls) -> 'DataParallel':
    mesh = jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,))
    # Process p must hold rows [p*n/P, (p+1)*n/P) of every global batch: that
    # is the slice input_pipeline reads for it. make_mesh may interleave hosts
    # (it orders by physical topology), so group the devices by process,
    # keeping make_mesh's order within each.
    devices = sorted(mesh.devices.flat, key=lambda d: d.process_index)
    counts = {p: sum(d.process_index == p for d in devices)
              for p in range(jax.process_count())}
    if len(set(counts.values())) != 1:
      raise ValueError(f'every process needs the same number of devices; got {counts}')
    return cls(jax.sharding.Mesh(np.array(devices), (DATA_AXIS,),
                                 axis_types=(jax.sharding.AxisType.Auto,)))

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  @property
  def batch(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def check_batch_size(self, global_batch_size: int, what: str = 'batch_size') -> int:
    """Returns this process's share of a global batch, or a clear error."""
    if global_batch_size % self.num_devices:
      raise ValueError(
          f'{what}={global_batch_size} does not divide across the '
          f'{self.num_devices} devices of this run; use a multiple of '
          f'{self.num_devices}')
    return global_batch_size // jax.process_count()

  @property
  def stacked_batch(self) -> NamedSharding:
    """Batches stacked on a leading step axis (k steps per dispatch)."""
    return NamedSharding(self.mesh, P(None, DATA_AXIS))

  def to_global(self, local_batch, *, stacked: bool = False):
    """Process-local numpy batch (a pytree) → global jax.Arrays sharded on 'data'.

    `stacked`: the batch axis is the second, after a leading step axis.
    """
    axis, sharding = (1, self.stacked_batch) if stacked else (0, self.batch)
    return jax.tree.map(lambda x: from_process_rows(sharding, x, axis), local_batch)

  def replicate(self, tree):
    """Host values (a pytree) → arrays replicated on every device of the mesh.

    Each process places its own copy on its own devices, and nothing crosses
    hosts: `jax.device_put` onto a mesh that spans processes would first
    all-gather every leaf to check that all hosts passed equal values (for an
    on-device training split, the whole split). The values must be equal on
    every host (they derive from the config and the seed); values computed on
    device are better made by `jax.jit(fn, out_shardings=self.replicated)`.
    """
    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, self.replicated,
                                          lambda index: x[index])
    return jax.tree.map(put, tree)

  def assert_replicas_agree(self, tree, what: str = 'train state') -> None:
    """Multi-process: raises unless every device of every process holds the same
    replicated values. Logged numbers cannot show a diverged replica (they are
    all-reduced), so this compares a checksum of each leaf across processes."""
    if jax.process_count() == 1:
      return
    from jax.experimental import multihost_utils
    sums = []
    for x in jax.tree.leaves(tree):
      shards = [np.asarray(s.data) for s in x.addressable_shards]
      if any(not np.array_equal(s, shards[0]) for s in shards[1:]):
        raise AssertionError(f'{what}: the devices of process {jax.process_index()} disagree')
      sums.append(zlib.crc32(np.ascontiguousarray(shards[0]).tobytes()))
    multihost_utils.assert_equal(
        np.array(sums, np.uint32).view(np.int32),
        f'{what}: process {jax.process_index()} holds other values than its peers')
