"""jax's own cluster detection decides how many processes a run has.

Each test makes one kind of cluster's environment on this machine and starts
two processes of tests/cluster_probe.py in it: nin_jax's set-up must call
jax.distributed.initialize() so that jax's detection finds the cluster, and
the two must reach each other as processes 0 and 1 of 2. Where jax finds no
cluster, the run is one plain process.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import jax

from conftest import REPO

PROBE = os.path.join(REPO, 'tests', 'cluster_probe.py')
# The variables by which jax (or nin_jax) could detect a cluster: cleared, so
# that only what a test sets is seen.
CLUSTER_VARS = ('SLURM_', 'OMPI_', 'PMI_', 'TPU_', 'MEGASCALE_', 'KUBERNETES_', 'JOB_COMPLETION',
                'JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'JAX_LOCAL_DEVICE_IDS',
                'GCE_METADATA')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def clean_env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}
  env.update({'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu',
              'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  env.update({k: str(v) for k, v in extra.items()})
  return env


def run_processes(envs, tmp_path, timeout=180) -> list[dict]:
  """Starts one probe per environment, at once; returns each one's report."""
  outs = [tmp_path / f'report{i}.json' for i in range(len(envs))]
  procs = [subprocess.Popen([sys.executable, PROBE, str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for env, out in zip(envs, outs)]
  try:
    for proc in procs:
      log, _ = proc.communicate(timeout=timeout)
      assert proc.returncode == 0, log[-3000:]
  finally:
    for proc in procs:
      proc.kill()
  return [json.loads(out.read_text()) for out in outs]


def assert_two_processes_found_each_other(reports):
  assert [r['process_index'] for r in reports] == [0, 1], reports
  for r in reports:
    assert r['initialized'] and r['process_count'] == 2, r
    assert r['device_count'] == 4 and r['seen'] == [0, 1], r


def coordinator(port) -> dict:
  # Process 0 serves jax's coordination service on loopback only.
  return {'JAX_COORDINATOR_PORT': port, 'JAX_COORDINATOR_BIND_ADDRESS': f'127.0.0.1:{port}'}


def test_no_cluster_is_one_plain_process(tmp_path):
  [report] = run_processes([clean_env()], tmp_path)
  assert report == {'initialized': False, 'process_index': 0, 'process_count': 1,
                    'device_count': 2, 'seen': [0]}


def test_jax_still_says_it_found_no_cluster_in_the_words_nin_jax_reads():
  # nin_jax tells "no cluster" (one plain process) from a broken cluster (an
  # error) by this ValueError; a jax release that words it otherwise fails here.
  # A fresh process: jax.distributed.initialize() refuses once backends started.
  code = ('import jax\n'
          'try:\n'
          '  jax.distributed.initialize()\n'
          'except ValueError as e:\n'
          '  print(str(e)); print(jax.distributed.is_initialized())\n')
  result = subprocess.run([sys.executable, '-c', code], env=clean_env(), capture_output=True,
                          text=True, timeout=120)
  message, initialized = result.stdout.splitlines()
  from nin_jax.runtime import sharding  # pylint: disable=g-import-not-at-top
  assert message.startswith(sharding._NO_CLUSTER), result.stdout + result.stderr
  assert initialized == 'False'


def test_jax_coordinator_address_and_process_variables(tmp_path):
  port = free_port()
  reports = run_processes([clean_env(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                                     JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=pid, **coordinator(port))
                           for pid in range(2)], tmp_path)
  assert_two_processes_found_each_other(reports)


def test_process_variables_without_a_coordinator_are_one_clear_error(tmp_path):
  [report] = run_processes([clean_env(JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=0)], tmp_path)
  assert 'set JAX_COORDINATOR_ADDRESS' in report['error'], report


def test_a_coordinator_without_the_process_count_is_one_clear_error(tmp_path):
  [report] = run_processes([clean_env(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{free_port()}')],
                           tmp_path)
  assert 'Set JAX_NUM_PROCESSES and JAX_PROCESS_ID' in report['error'], report


def slurm_env(port, statics, tasks=2):
  return clean_env(SLURM_JOB_ID=4242, SLURM_STEP_NODELIST='localhost', SLURM_NTASKS=tasks,
                   SLURM_PROCID=statics, SLURM_LOCALID=statics, **coordinator(port))


def test_slurm_step(tmp_path):
  port = free_port()
  assert_two_processes_found_each_other(run_processes([slurm_env(port, t) for t in range(2)],
                                                      tmp_path))


def test_a_one_task_slurm_step_keeps_every_device(tmp_path):
  # jax would make it process 0 of 1 pinned to the device SLURM_LOCALID.
  [report] = run_processes([slurm_env(free_port(), 0, tasks=1)], tmp_path)
  assert not report['initialized'] and report['device_count'] == 2, report


class MetadataServer:
  """A Cloud TPU VM's metadata server (the attributes jax asks for) on 127.0.0.1."""

  def __init__(self, attributes: dict[str, str]):
    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        key = self.path.rsplit('/', 1)[-1]
        ok = self.path.startswith('/computeMetadata/v1/instance/attributes/') and key in attributes
        body = (attributes[key] if ok else 'not found').encode()
        self.send_response(200 if ok else 404)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass
    self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.address = f'127.0.0.1:{self.server.server_address[1]}'
    threading.Thread(target=self.server.serve_forever, daemon=True).start()

  def close(self):
    self.server.shutdown()


def test_cloud_tpu_vm_slice_through_its_metadata_server(tmp_path):
  # Each TPU VM worker has its own metadata server; jax asks it for the
  # worker's number and the slice's workers (process 0 first).
  port = free_port()
  servers = [MetadataServer({'agent-worker-number': str(w),
                             'worker-network-endpoints': 'localhost,localhost',
                             'tpu-env': "ACCELERATOR_TYPE: 'v5litepod-8'\n"}) for w in range(2)]
  try:
    reports = run_processes([clean_env(NIN_PROBE_TPU_VM=1, GCE_METADATA_IP=s.address,
                                       NO_PROXY='127.0.0.1', **coordinator(port))
                             for s in servers], tmp_path)
  finally:
    for s in servers:
      s.close()
  assert_two_processes_found_each_other(reports)


def test_gke_tpu_pod_through_its_worker_variables(tmp_path):
  # GKE sets these in a TPU pod's environment (and no metadata server answers).
  port = free_port()
  assert_two_processes_found_each_other(run_processes([
      clean_env(NIN_PROBE_TPU_VM=1, TPU_SKIP_MDS_QUERY='true',
                TPU_WORKER_HOSTNAMES='localhost,localhost',
                TPU_WORKER_ID=w, MEGASCALE_COORDINATOR_ADDRESS='localhost',
                MEGASCALE_NUM_SLICES=1, MEGASCALE_SLICE_ID=0, **coordinator(port))
      for w in range(2)], tmp_path))


KUBERNETES_CLIENT = '''\
"""A stand-in for the `kubernetes` client: one indexed Job of NIN_K8S_PARALLELISM pods."""
import os
from types import SimpleNamespace as O


class ApiException(Exception):
  pass


config = O(load_incluster_config=lambda: None)
_pod = O(metadata=O(name='nin-0', labels={'job-name': 'nin'},
                    owner_references=[O(controller=True, kind='Job')]),
         spec=O(subdomain='nin'))
_job = O(metadata=O(name='nin', labels={}),
         spec=O(parallelism=int(os.environ['NIN_K8S_PARALLELISM'])))


class CoreV1Api:
  def list_namespaced_pod(self, namespace, field_selector):
    return O(items=[_pod])


class BatchV1Api:
  def read_namespaced_job(self, name, namespace):
    assert name == 'nin'
    return _job


client = O(CoreV1Api=CoreV1Api, BatchV1Api=BatchV1Api, exceptions=O(ApiException=ApiException))
'''


def test_kubernetes_indexed_job(tmp_path):
  # jax reads the process count from the Job (its parallelism) and the
  # process id from JOB_COMPLETION_INDEX; the coordinator is named explicitly
  # (a JobSet's pod host names do not resolve on this machine).
  (tmp_path / 'kubernetes').mkdir()
  (tmp_path / 'kubernetes' / '__init__.py').write_text(KUBERNETES_CLIENT)
  port = free_port()
  envs = [clean_env(KUBERNETES_SERVICE_HOST='127.0.0.1', HOSTNAME='localhost',
                    JOB_COMPLETION_INDEX=i, NIN_K8S_PARALLELISM=2, NIN_PROBE_K8S_NAMESPACE='ml',
                    JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', **coordinator(port))
          for i in range(2)]
  for env in envs:
    env['PYTHONPATH'] = f'{tmp_path}{os.pathsep}{REPO}'  # The stand-in client first.
  assert_two_processes_found_each_other(run_processes(envs, tmp_path))
