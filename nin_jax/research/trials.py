"""Trials: ordinary training runs, one per directory, run one after another.

A sweep (nin_jax/research/sweeps.py) and the head ablation (nin_jax/research/ablation.py) are
both a list of `Trial`s: a name, the config overrides it applies, its workdir
under the sweep's, and the experiment command line that runs it. A trial's
directory holds overrides.json (what it runs), status.json (how it ended),
train.log (its output) and the run's own files. The sweep directory may be
any path epath understands, local or gs://; in a bucket, the log is spooled to
a local file and uploaded every LOG_UPLOAD_S seconds and at the trial's end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

from absl import logging
from etils import epath

from nin_jax.runtime import storage
from nin_jax.research.sweeps import SweepError

OVERRIDES_FILE = 'overrides.json'
STATUS_FILE = 'status.json'
FINAL_METRICS_FILE = 'final_metrics.json'
LOG_FILE = 'train.log'
LOG_UPLOAD_S = 30.0
DONE, FAILED, INCOMPLETE, PENDING = 'done', 'failed', 'incomplete', 'pending'


@dataclasses.dataclass
class Trial:
  index: int
  name: str
  overrides: dict
  workdir: str  # A local absolute path or a URL (gs://…).
  command: list[str]


# Short names for the keys sweeps vary most, so directory names stay readable.
_ABBREVIATIONS = {'learning_rate': 'lr', 'weight_decay': 'wd', 'batch_size': 'bs',
                  'width_multiplier': 'width', 'dropout_rate': 'dropout',
                  'label_smoothing': 'ls', 'num_epochs': 'epochs'}


def _short_value(value: Any) -> str:
  if isinstance(value, float):
    text = f'{value:.4g}'
  elif isinstance(value, (tuple, list)):
    text = '-'.join(_short_value(v) for v in value) or 'none'
  else:
    text = str(value)
  return re.sub(r'[^A-Za-z0-9.+\-]', '_', text)


def trial_name(index: int, overrides: dict, all_keys: Sequence[str] = ()) -> str:
  """'trial_003_lr=0.1_wd=0.0001': the index, then each override's key=value.

  A key is shortened to its last part (abbreviated) unless two swept keys share it.
  """
  leaves = [k.split('.')[-1] for k in (all_keys or overrides)]
  parts = []
  for key, value in overrides.items():
    leaf = key.split('.')[-1]
    short = _ABBREVIATIONS.get(leaf, leaf) if leaves.count(leaf) <= 1 else key
    parts.append(f'{short}={_short_value(value)}')
  return '_'.join([f'trial_{index:03d}'] + parts)[:200]


def format_flag_value(value: Any) -> str:
  """A value as ml_collections' --config.key= parser reads it back."""
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value) if isinstance(value, (float, bool)) else str(value)


def base_override_args(argv: Sequence[str]) -> list[str]:
  """The --config.key=value flags of a command line, to pass on to every trial."""
  args = []
  for arg in argv:
    if arg.startswith(('--config.', '-config.')):
      if '=' not in arg:
        raise SweepError(f'write {arg} as {arg}=VALUE (one argument), so it can be '
                         'passed on to every trial')
      args.append('--' + arg.lstrip('-'))
  return args


def trial_command(trainer: str, config_path: str, workdir: str, base_args: Sequence[str],
                  overrides: dict, *, python: str = sys.executable) -> list[str]:
  """The experiment's command line for one trial (what runs, and what --dry_run prints)."""
  return ([python, os.path.abspath(trainer), f'--config={os.path.abspath(config_path)}',
           f'--workdir={storage.workdir_path(workdir)}', *base_args] +
          [f'--config.{k}={format_flag_value(v)}' for k, v in overrides.items()])


def group_command(trainer: str, config_path: str, workdirs: Sequence[str],
                  base_args: Sequence[str], *, python: str = sys.executable) -> list[str]:
  """The command line that trains several trials side by side (`--trial_workdir`s).

  Each trial's overrides are read from its workdir's overrides.json.
  """
  return ([python, os.path.abspath(trainer), f'--config={os.path.abspath(config_path)}',
           *base_args] + [f'--trial_workdir={storage.workdir_path(w)}' for w in workdirs])


def make_trials(trials: Sequence[dict], sweep_dir: str, command: Callable[[str, dict], list[str]],
                names: Sequence[str] | None = None) -> list[Trial]:
  all_keys = list(dict.fromkeys(k for t in trials for k in t))
  root = storage.workdir_path(sweep_dir)
  out = []
  for i, overrides in enumerate(trials):
    name = names[i] if names else trial_name(i, overrides, all_keys)
    workdir = str(root / name)
    out.append(Trial(i, name, dict(overrides), workdir, command(workdir, overrides)))
  return out


def read_json(path: epath.PathLike):
  """The JSON in a file, or None when it is missing or cut short."""
  try:
    return json.loads(epath.Path(path).read_text())
  except (OSError, ValueError):
    return None


def write_json(path: epath.PathLike, obj) -> None:
  # Atomic: a runner killed mid-write leaves the old file whole.
  storage.write_atomic(epath.Path(path), json.dumps(obj, indent=2, default=str))


def is_done(workdir: str) -> bool:
  return (epath.Path(workdir) / FINAL_METRICS_FILE).exists()


def error_tail(log_path: epath.PathLike, lines: int = 20) -> str:
  try:
    text = epath.Path(log_path).read_bytes().decode(errors='replace')
  except OSError:
    return ''
  return '\n'.join([l.rstrip() for l in text.splitlines() if l.strip()][-lines:])


def short_error(tail: str) -> str:
  """The line of a log tail that says what went wrong, for one table cell."""
  lines = [l for l in (tail or '').splitlines() if l.strip()]
  for line in reversed(lines):
    if line.startswith('error:') or re.match(r'^\w+(Error|Exception)\b', line):
      return line.strip()[:300]
  return lines[-1].strip()[:300] if lines else ''


def run_trials(trials: Sequence[Trial], *, base_args: Sequence[str] = (),
               env: dict | None = None, stream=sys.stdout,
               groups: Sequence[Sequence[int]] | None = None,
               group_command: Callable[[list[str]], list[str]] | None = None
               ) -> dict[str, str]:
  """Runs the trials one after another; returns {name: status}.

  `groups` (indices into `trials`; nin_jax/research/trial_group.py plans them):
  the trials of a group of several run together, in one process that
  `group_command(their workdirs)` starts; a group of one runs as usual.

  Each trial is the experiment's command line in a fresh process, not a call of
  train.train_and_evaluate in this one: a trial that crashes hard (XLA abort,
  OOM kill, a hung device) or leaves JAX state behind cannot take the sweep
  with it, every trial starts from a clean JAX, and what runs here is exactly
  what --dry_run prints for a cluster queue. The price, a few seconds of
  startup per trial, is nothing against a real trial.
  """
  # Check every trial directory first: a changed sweep must not half-run.
  records = {}
  for trial in trials:
    recorded = read_json(epath.Path(trial.workdir) / OVERRIDES_FILE)
    record = {'index': trial.index, 'overrides': json.loads(json.dumps(trial.overrides, default=str)),
              'base_overrides': list(base_args)}
    if recorded is not None and (recorded.get('overrides'), recorded.get('base_overrides')) != (
        record['overrides'], record['base_overrides']):
      raise SweepError(
          f'{trial.workdir} holds a trial with other overrides ({recorded.get("overrides")}, '
          f'base {recorded.get("base_overrides")}); the sweep or its --config.* flags '
          'changed. Use a new --workdir, or delete that trial directory.')
    records[trial.name] = record
  statuses = {}
  with _Signals() as signals:
    for group in groups or [[i] for i in range(len(trials))]:
      members = [trials[i] for i in group]
      if len(members) == 1:
        statuses[members[0].name] = _run_trial(members[0], records[members[0].name],
                                               len(trials), env, signals, stream)
      else:
        statuses.update(_run_group(members, records, len(trials), group_command, env,
                                   signals, stream))
  return statuses


def _run_group(members: Sequence[Trial], records: dict, count: int, group_command,
               env: dict | None, signals: _Signals, stream) -> dict[str, str]:
  """Runs the unfinished trials of a group in one process; records how each ended.

  The group's output goes to each member's train.log; a member's own lines
  there start with its name in brackets.
  """
  statuses, todo = {}, []
  for trial in members:
    workdir = epath.Path(trial.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / OVERRIDES_FILE, records[trial.name])
    if is_done(trial.workdir):
      print(f'[{trial.index + 1}/{count}] {trial.name}: finished before, skipped',
            file=stream, flush=True)
      statuses[trial.name] = DONE
    else:
      todo.append(trial)
  if len(todo) == 1:
    statuses[todo[0].name] = _run_trial(todo[0], records[todo[0].name], count, env,
                                        signals, stream)
  if len(todo) <= 1:
    return statuses
  signals.raise_if_stopping(f'{todo[0].name} and {len(todo) - 1} more did not start')
  log = epath.Path(todo[0].workdir) / LOG_FILE
  names = ', '.join(f'[{t.index + 1}/{count}] {t.name}' for t in todo)
  print(f'{names}: running side by side (log: {log})', file=stream, flush=True)
  t0 = time.time()
  returncode = run_logged(group_command([t.workdir for t in todo]), log, env, signals)
  wall = time.time() - t0
  output = log.read_bytes()
  for trial in todo[1:]:  # The same output in every member's log.
    own = epath.Path(trial.workdir) / LOG_FILE
    storage.write_atomic(own, (own.read_bytes() if own.exists() else b'') + output)
  for trial in todo:
    statuses[trial.name] = _record_group_member(trial, returncode, wall, signals, count, stream)
  signals.raise_if_stopping(f'{names} stopped at their last checkpoints')
  return statuses


def _record_group_member(trial: Trial, returncode: int, wall: float, signals: _Signals,
                         count: int, stream) -> str:
  """A group member's status.json from its files and its lines of the group's log."""
  mine = '\n'.join(line.split('] ', 1)[1] for line in error_tail(
      epath.Path(trial.workdir) / LOG_FILE, lines=10**6).splitlines()
      if line.startswith(f'[{trial.name}] '))
  if is_done(trial.workdir):
    status = {'status': DONE, 'returncode': 0, 'wall_s': wall}
  elif 'error:' not in mine and (returncode == 0 or signals.received):
    status = {'status': INCOMPLETE, 'returncode': returncode, 'wall_s': wall}
  else:
    tail = mine if 'error:' in mine else error_tail(epath.Path(trial.workdir) / LOG_FILE)
    status = {'status': FAILED, 'returncode': returncode, 'wall_s': wall,
              'error_tail': '\n'.join(tail.splitlines()[-20:])}
  write_json(epath.Path(trial.workdir) / STATUS_FILE, status)
  summary = f'[{trial.index + 1}/{count}] {trial.name}: {status["status"]} in {wall:.0f}s'
  if status['status'] == FAILED:
    summary += f' (exit {returncode}): {short_error(status["error_tail"])}'
  print(summary, file=stream, flush=True)
  return status['status']


def _run_trial(trial: Trial, record: dict, count: int, env: dict | None,
               signals: _Signals, stream) -> str:
  """Runs one trial (unless done before) and records how it ended; returns its status.

  Raises Stopped, after recording the trial, if a signal asked the runner to stop.
  """
  workdir = epath.Path(trial.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  write_json(workdir / OVERRIDES_FILE, record)
  prefix = f'[{trial.index + 1}/{count}] {trial.name}'
  if is_done(trial.workdir):
    print(f'{prefix}: finished before, skipped', file=stream, flush=True)
    return DONE
  signals.raise_if_stopping(f'{trial.name} did not start')
  log = workdir / LOG_FILE
  print(f'{prefix}: running (log: {log})', file=stream, flush=True)
  t0 = time.time()
  returncode = run_logged(trial.command, log, env, signals)
  wall = time.time() - t0
  if returncode == 0 and is_done(trial.workdir):
    status = {'status': DONE, 'returncode': 0, 'wall_s': wall}
  elif returncode == 0 or signals.received:  # Stopped early: rerunning resumes it.
    status = {'status': INCOMPLETE, 'returncode': returncode, 'wall_s': wall}
  else:
    status = {'status': FAILED, 'returncode': returncode, 'wall_s': wall,
              'error_tail': error_tail(log)}
  write_json(workdir / STATUS_FILE, status)
  signals.raise_if_stopping(f'{trial.name} stopped at its last checkpoint')
  summary = f'{prefix}: {status["status"]} in {wall:.0f}s'
  if status['status'] == FAILED:
    summary += f' (exit {returncode}): {short_error(status["error_tail"])}'
  print(summary, file=stream, flush=True)
  return status['status']


class Stopped(Exception):
  """A signal stopped the trials, the running one having saved first; the message says so."""

  def __init__(self, message: str, signal_name: str):
    super().__init__(message)
    self.signal_name = signal_name


class _Signals:
  """SIGTERM and Ctrl-C while trials run: the running trial saves and stops, then the runner.

  The trial is sent SIGTERM, which its train loop takes as a request to save a
  checkpoint and stop. (A Ctrl-C at the terminal reached the trial too, as a
  member of the same process group; the SIGTERM after it changes nothing.) A
  second Ctrl-C passes SIGINT on, which stops the trial at once, without
  saving, and ends the runner without waiting for it.
  """

  def __init__(self):
    self.received = None  # The name of the first signal, e.g. 'SIGINT'.
    self._proc = None
    self._previous = {}

  def __enter__(self):
    try:
      self._previous = {s: signal.signal(s, self._handle)
                        for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # Not the main thread.
      self._previous = {}
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def started(self, proc: subprocess.Popen) -> None:
    """`proc` is the running trial; told to stop at once if a signal came before it."""
    self._proc = proc
    if self.received:
      proc.send_signal(signal.SIGTERM)

  def raise_if_stopping(self, what_happened: str) -> None:
    """Stopped, saying `what_happened` to the trial, if a signal asked to stop."""
    if self.received:
      how = 'interrupted' if self.received == 'SIGINT' else f'stopped ({self.received})'
      raise Stopped(f'{how}: {what_happened}; rerun the same command to resume',
                    self.received)

  def _handle(self, signum, frame):
    if self.received and signum == signal.SIGINT:
      print('second Ctrl-C: stopping now, without saving', file=sys.stderr, flush=True)
      if self._proc is not None:
        self._proc.send_signal(signal.SIGINT)  # The trial's second Ctrl-C: it stops at once.
      raise SystemExit(130)
    if self.received:
      return
    self.received = signal.Signals(signum).name
    if signum == signal.SIGINT:
      print("Ctrl-C: saving the running trial's checkpoint, then stopping (Ctrl-C again "
            'to stop now, without saving)', file=sys.stderr, flush=True)
    if self._proc is not None:
      self._proc.send_signal(signal.SIGTERM)


def run_logged(command: list[str], log_path: epath.Path, env: dict | None,
               signals: _Signals) -> int:
  """Runs command with stdout+stderr appended to log_path (local or in a bucket)."""
  header = f'\n$ {shlex.join(command)}\n'
  if not storage.is_remote(log_path):
    return _run_to_file(command, str(log_path), header, env, signals)
  # An object cannot be appended to: spool locally, send what is new now and then.
  log = storage.AppendedFile(log_path, upload_every_s=LOG_UPLOAD_S)
  with tempfile.TemporaryDirectory(prefix='nin_trial_log_') as spool_dir:
    spool = os.path.join(spool_dir, LOG_FILE)
    open(spool, 'wb').close()
    sent = 0

    def upload():
      nonlocal sent
      with open(spool, 'rb') as f:
        f.seek(sent)
        new = f.read()
      sent += len(new)
      log.append(new)
      log.upload_all()

    stop = threading.Event()

    def upload_every_while():
      while not stop.wait(LOG_UPLOAD_S):
        try:
          upload()
        except OSError as e:  # Still pending: the next upload (or the last) carries it.
          logging.warning('could not upload %s: %s', log_path, e)

    uploader = threading.Thread(target=upload_every_while, name='trial-log-upload', daemon=True)
    uploader.start()
    try:
      return _run_to_file(command, spool, header, env, signals)
    finally:
      stop.set()
      uploader.join()
      upload()


def _run_to_file(command: list[str], path: str, header: str, env: dict | None,
                 signals: _Signals) -> int:
  """Runs command, output appended to the local file `path`; `signals` pass signals on."""
  with open(path, 'a') as log:
    log.write(header)
    log.flush()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    signals.started(proc)
    return proc.wait()
