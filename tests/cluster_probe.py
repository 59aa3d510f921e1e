"""One process of a simulated cluster: starts nin_jax's multi-process set-up and
reports what it became, as JSON in the file named by its argument.

tests/test_cluster_detection.py starts it in a made-up cluster environment
(SLURM's variables, a TPU VM's metadata server, a Kubernetes indexed Job...).
Two pieces of a real cluster cannot be made on a CPU machine and are put in
here, in jax, never in nin_jax:
- NIN_PROBE_TPU_VM=1: jax believes it runs on a Cloud TPU VM (it decides that
  at import from libtpu and the TPU chips it finds, and where it finds none
  it tells itself not to ask a metadata server);
- NIN_PROBE_K8S_NAMESPACE=ns: the Kubernetes namespace, which jax reads from
  a fixed path under /var/run/secrets (the `kubernetes` client itself is a
  stand-in module on PYTHONPATH, answering for a local API server).
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _simulate() -> None:
  if os.environ.get('NIN_PROBE_TPU_VM'):
    skip_metadata = os.environ.get('TPU_SKIP_MDS_QUERY')
    from jax._src.clusters import cloud_tpu_cluster
    cloud_tpu_cluster.running_in_cloud_tpu_vm = True
    if skip_metadata is None:  # jax's import sets it where it finds no chips.
      os.environ.pop('TPU_SKIP_MDS_QUERY', None)
  namespace = os.environ.get('NIN_PROBE_K8S_NAMESPACE')
  if namespace:
    from jax._src.clusters import k8s_cluster
    k8s_cluster.K8sCluster._namespace = classmethod(lambda cls: namespace)


def main() -> None:
  _simulate()
  import jax
  from jax.experimental import multihost_utils
  from nin_jax.runtime import sharding
  out = sys.argv[1]
  try:
    sharding.maybe_initialize_distributed()
  except ValueError as e:
    _write(out, {'error': str(e)})
    return
  # Every process's index, gathered: proves the processes reached each other.
  seen = ([int(v) for v in multihost_utils.process_allgather(jax.process_index())]
          if jax.process_count() > 1 else [0])
  _write(out, {'initialized': jax.distributed.is_initialized(),
               'process_index': jax.process_index(), 'process_count': jax.process_count(),
               'device_count': jax.device_count(), 'seen': seen})


def _write(path, report) -> None:
  with open(path, 'w') as f:
    json.dump(report, f)


if __name__ == '__main__':
  main()
