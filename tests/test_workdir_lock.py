"""One writer per workdir: the lock's rules, in-process (the two-run and SIGKILL
cases run the real command line in tests/test_reliability.py)."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from nin_jax.runtime import workdir_lock


def write_lock(workdir, **holder):
  record = {'host': 'other-host', 'pid': 4242, 'started_utc': '2026-01-01 00:00:00 UTC',
            'token': 'theirs', **holder}
  (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(record))


def test_the_lock_names_its_holder_and_is_gone_after_release(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
  assert holder['pid'] == os.getpid() and holder['host'] and holder['started_utc']
  with pytest.raises(workdir_lock.WorkdirLockedError, match=f'pid {os.getpid()} on '):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  lock.release()
  assert os.listdir(tmp_path) == []


def test_a_live_heartbeat_on_shared_storage_keeps_the_lock(tmp_path):
  write_lock(tmp_path, heartbeat=time.time() - 10)
  with pytest.raises(workdir_lock.WorkdirLockedError) as error:
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert (f'workdir {tmp_path} is in use by another run: pid 4242 on other-host, started '
          '2026-01-01 00:00:00 UTC') in str(error.value)


def test_a_stale_heartbeat_on_shared_storage_is_taken_over_with_a_warning(tmp_path, caplog):
  write_lock(tmp_path, heartbeat=time.time() - 2 * workdir_lock.STALE_AFTER_S)
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
  assert any('taking over the lock' in r.getMessage() and 'no heartbeat for' in r.getMessage()
             for r in caplog.records)
  lock.release()


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path), heartbeat_s=0.05)
  lock.acquire()
  first = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())['heartbeat']
  time.sleep(0.3)
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())['heartbeat'] > first
  lock.release()
  assert os.listdir(tmp_path) == []


def test_an_unreadable_lock_is_refused_while_fresh_and_removed_once_stale(tmp_path, caplog):
  lock_file = tmp_path / workdir_lock.LOCK_FILE
  lock_file.write_text('{"host": "other-ho')  # Damaged: cut short.
  with pytest.raises(workdir_lock.WorkdirLockedError,
                     match=r'is unreadable \(not JSON\), last written \d+ s ago; .* If no run '
                           f'uses {tmp_path}, delete it'):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert lock_file.read_text() == '{"host": "other-ho'  # Refused, and nothing lost.
  old = time.time() - 2 * workdir_lock.STALE_AFTER_S
  os.utime(lock_file, (old, old))
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  assert json.loads(lock_file.read_text())['pid'] == os.getpid()
  assert any('removing the unreadable lock' in r.getMessage() for r in caplog.records)
  lock.release()


def test_every_refusal_says_how_to_take_the_lock_over_by_hand(tmp_path):
  write_lock(tmp_path, heartbeat=time.time() - 10)
  with pytest.raises(workdir_lock.WorkdirLockedError) as error:
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert str(error.value).endswith(
      'To take the lock over by hand, make sure pid 4242 on other-host has ended (e.g. '
      f'`ps -p 4242` there), then delete {tmp_path / workdir_lock.LOCK_FILE} and rerun; a '
      'lock whose heartbeat is over 300 s old is taken over by itself.')
  assert 'last heartbeat 10 s ago' in str(error.value)


def test_a_same_host_lock_with_a_live_pid_and_an_old_heartbeat_is_taken_over(tmp_path, caplog):
  # A live run refreshes its heartbeat; pid 1 (init) never does.
  write_lock(tmp_path, host=socket.gethostname(), pid=1,
             process_start=workdir_lock._process_start(1),
             heartbeat=time.time() - 2 * workdir_lock.STALE_AFTER_S)
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
  assert any('although pid 1 is alive' in r.getMessage() for r in caplog.records)
  lock.release()


def test_a_stopped_holder_keeps_its_lock_and_the_refusal_says_so(tmp_path):
  # Ctrl-Z pauses the heartbeat too; the run would write again once continued.
  holder = subprocess.Popen(['sleep', '60'])
  try:
    os.kill(holder.pid, signal.SIGSTOP)
    deadline = time.time() + 10
    while not workdir_lock._stopped(holder.pid):
      assert time.time() < deadline
      time.sleep(0.01)
    write_lock(tmp_path, host=socket.gethostname(), pid=holder.pid,
               process_start=workdir_lock._process_start(holder.pid),
               heartbeat=time.time() - 2 * workdir_lock.STALE_AFTER_S)
    with pytest.raises(workdir_lock.WorkdirLockedError) as error:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert f'stopped (Ctrl-Z? `kill -CONT {holder.pid}` continues it)' in str(error.value)
  finally:
    holder.kill()
    holder.wait()
