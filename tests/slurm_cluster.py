"""A one-node SLURM cluster on this machine, for testing docs/install.md's SLURM recipe.

Debian's slurm-wlm (slurmctld, slurmd, srun, sbatch) and munge, each daemon
started in the foreground with its files in a temporary directory and its own
ports, and stopped at the end. The node is this host with its real CPU count;
jobs see the usual SLURM environment, so `jax.distributed.initialize()` finds
its peers exactly as on a GPU cluster.
"""

import os
import shutil
import socket
import subprocess
import time

DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'squeue', 'scancel')


def missing() -> str | None:
  """Why this machine cannot run the cluster, or None if it can."""
  absent = [d for d in DAEMONS if not shutil.which(d) and not os.path.exists(f'/usr/sbin/{d}')]
  if absent:
    return f'{", ".join(absent)} not installed (apt-get install slurm-wlm)'
  if os.geteuid() != 0:
    return 'slurmd must run as root'
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _daemon(name: str) -> str:
  return shutil.which(name) or f'/usr/sbin/{name}'


class SlurmCluster:

  def __init__(self, root):
    self.root = str(root)
    for d in ('state', 'spool', 'log'):
      os.makedirs(os.path.join(self.root, d), exist_ok=True)
    host = socket.gethostname()
    munge_socket = os.path.join(self.root, 'munge.socket')
    ctld_port, slurmd_port = _free_port(), _free_port()
    self.conf = os.path.join(self.root, 'slurm.conf')
    with open(self.conf, 'w') as f:
      f.write('\n'.join([
          'ClusterName=nintest', f'SlurmctldHost={host}(127.0.0.1)',
          f'SlurmctldPort={ctld_port}', f'SlurmdPort={slurmd_port}',
          'AuthType=auth/munge', f'AuthInfo=socket={munge_socket}',
          'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
          'SelectType=select/cons_tres', 'SelectTypeParameters=CR_Core',
          'SchedulerType=sched/builtin', 'SlurmUser=root', 'ReturnToService=2',
          'MpiDefault=none', 'JobAcctGatherType=jobacct_gather/none',
          f'StateSaveLocation={self.root}/state', f'SlurmdSpoolDir={self.root}/spool',
          f'SlurmctldPidFile={self.root}/slurmctld.pid', f'SlurmdPidFile={self.root}/slurmd.pid',
          f'SlurmctldLogFile={self.root}/log/slurmctld.log',
          f'SlurmdLogFile={self.root}/log/slurmd.log',
          f'NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN',
          f'PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP '
          'OverSubscribe=YES', '']))
    self.env = {**os.environ, 'SLURM_CONF': self.conf}
    self._procs = [subprocess.Popen(
        [_daemon('munged'), '--foreground', '--force', f'--socket={munge_socket}',
         f'--pid-file={self.root}/munged.pid', f'--log-file={self.root}/log/munged.log',
         f'--seed-file={self.root}/munged.seed'],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    self.wait_for(lambda: os.path.exists(munge_socket), 'munged')
    for daemon in ('slurmctld', 'slurmd'):
      self._procs.append(subprocess.Popen(
          [_daemon(daemon), '-D', *(['-c'] if daemon == 'slurmctld' else [])],
          env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    self.wait_for(lambda: 'idle' in self._run('sinfo', '-h', '-o', '%t'), 'an idle node')

  def _run(self, *args) -> str:
    return subprocess.run(args, env=self.env, capture_output=True, text=True).stdout

  def wait_for(self, ready, what, timeout=60):
    """Polls ready() until it is true; fails if a daemon died or time ran out."""
    deadline = time.time() + timeout
    while not ready():
      dead = [p.args[0] for p in self._procs if p.poll() is not None]
      assert not dead and time.time() < deadline, (
          f'waiting for {what}: {dead or "timed out"}; logs in {self.root}/log')
      time.sleep(0.2)

  def sbatch(self, script_path, cwd) -> str:
    """Submits a batch script; returns its job id."""
    out = subprocess.run(['sbatch', '--parsable', str(script_path)], env=self.env, cwd=cwd,
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split(';')[0]

  def wait(self, job_id, timeout=600) -> str:
    """Waits until the job has left the queue; returns its state."""
    self.wait_for(lambda: not self._run('squeue', '-h', '-j', job_id).strip(),
               f'job {job_id}', timeout)
    info = self._run('scontrol', 'show', 'job', job_id)
    return next((w.split('=', 1)[1] for w in info.split() if w.startswith('JobState=')),
                'COMPLETED?')

  def signal(self, job_id, name: str) -> None:
    """Sends signal `name` to the job's running steps (every task), as SLURM does."""
    subprocess.run(['scancel', f'--signal={name}', job_id], env=self.env, check=True)

  def stop(self):
    for p in reversed(self._procs):
      p.terminate()
    for p in self._procs:
      try:
        p.wait(timeout=20)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
