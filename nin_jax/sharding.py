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

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def maybe_initialize_distributed(coordinator_address: str = '',
                                 num_processes: int = 0,
                                 process_id: int = -1,
                                 heartbeat_timeout_s: int = 0) -> None:
  """Starts `jax.distributed` when this run spans several processes.

  Explicit arguments win (CPU clusters, tests). Otherwise JAX auto-detects TPU
  pods and SLURM/Open MPI GPU clusters; a single plain process skips it.
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
  elif _cluster_detected():
    jax.distributed.initialize(**kwargs)
  else:
    return
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _cluster_detected() -> bool:
  # TPU pod slices, SLURM and Open MPI launches are what jax auto-detects.
  env = os.environ
  multi_tpu = env.get('TPU_WORKER_HOSTNAMES', '').count(',') > 0
  slurm = int(env.get('SLURM_NTASKS', '1') or 1) > 1
  mpi = int(env.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1
  return multi_tpu or slurm or mpi


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """The mesh and the two shardings a data-parallel run needs."""
  mesh: jax.sharding.Mesh

  @classmethod
  def create(cls) -> 'DataParallel':
    return cls(jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
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

  def to_global(self, local_batch):
    """Process-local numpy batch (a pytree) → global jax.Arrays sharded on 'data'."""
    def put(x):
      x = np.asarray(x)
      global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
      return jax.make_array_from_process_local_data(self.batch, x, global_shape)
    return jax.tree.map(put, local_batch)

  def replicate(self, tree):
    return jax.device_put(tree, self.replicated)

