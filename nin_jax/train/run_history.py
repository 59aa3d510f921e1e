"""A run's configs over its launches: what each launch changed, and what it may not.

Every checkpoint carries the config that made it (Orbax custom metadata,
`checkpoint_metadata`): that is what a resume is compared with, so deleting
or editing a file in the workdir cannot make a change pass unseen.
`config.json` in the workdir is the config of the newest launch;
`launches.jsonl` keeps one record per launch (the step it started at, its
schedule's total steps, what it changed and its whole config), so no launch
overwrites the record of the steps an earlier one trained. A line of it that
is not a record (cut short, edited by hand) is reported by line number and,
at the next launch, moved to `launches.jsonl.damaged` beside it. Which fields
may change on resume is `config.RESUME_SAFE_FIELDS`; any other change is
refused unless the user accepts it (--allow_config_change).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from nin_jax.runtime import checkpoint as checkpoint_lib
from nin_jax.train import config as config_lib
from nin_jax.runtime import metrics
from nin_jax.train import optim
from nin_jax.runtime import provenance
from nin_jax.runtime import storage

CONFIG_FILE = 'config.json'
LAUNCHES_FILE = 'launches.jsonl'
DAMAGED_LINES_FILE = LAUNCHES_FILE + '.damaged'
CHECKPOINT_KEY = 'config'  # The config's key in each checkpoint's metadata.


class ConfigChangeError(ValueError):
  """Resuming with a config that changes what a step means, without accepting it."""


def as_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as JSON would give it back (tuples as lists), for comparisons."""
  return json.loads(config.to_json_best_effort())


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
  """(field, old, new) for every field both configs have and that differs.

  A field only one side has is a field added or removed by a code change,
  not a change of the run's config.
  """
  a, b = flatten(old), flatten(new)
  return [(k, a[k], b[k]) for k in b if k in a and a[k] != b[k]]


def describe(diff, old_name: str = 'checkpoint', new_name: str = 'now') -> str:
  return ', '.join(f'{k}: {_short_repr(a)} ({old_name}) → {_short_repr(b)} ({new_name})'
                   for k, a, b in diff)


def _short_repr(value) -> str:
  return repr(value) if isinstance(value, str) else json.dumps(value)


def saved_config(workdir: str) -> dict | None:
  """The config of the run's newest launch, or None if it has not recorded one."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:  # Cut short by a crash: nothing to compare with.
    return None


def launches(workdir: str) -> list[dict]:
  """The intact records of launches.jsonl, oldest first."""
  return read_launches(workdir)[0]


def read_launches(workdir: str) -> tuple[list[dict], list[tuple[int, str]]]:
  """(intact records, (line number, text) of every damaged line) of launches.jsonl."""
  path = epath.Path(workdir) / LAUNCHES_FILE
  return _parse_launches(path.read_text()) if path.exists() else ([], [])


def _parse_launches(text: str) -> tuple[list[dict], list[tuple[int, str]]]:
  records, damaged = [], []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict):
      records.append(record)
    else:  # Cut short (a crash, an interrupted copy) or edited by hand.
      damaged.append((number, line))
  return records, damaged


def damage_report(workdir: str, damaged: list[tuple[int, str]]) -> str:
  """'<workdir>/launches.jsonl line 3 is damaged (not a JSON record; it reads {"st…)'."""
  path = epath.Path(workdir) / LAUNCHES_FILE
  if len(damaged) == 1:
    number, text = damaged[0]
    shown = text if len(text) <= 40 else text[:40] + '…'
    return f'{path} line {number} is damaged (not a JSON record; it reads {shown})'
  return (f'{path} lines {", ".join(str(n) for n, _ in damaged)} are damaged '
          '(not JSON records)')


def checkpoint_metadata(config: ml_collections.ConfigDict) -> dict:
  """What every checkpoint of this run carries: the config that made it."""
  return {CHECKPOINT_KEY: as_dict(config)}


def checkpoint_config(checkpointer: checkpoint_lib.Checkpointer, workdir: str,
                      step: int) -> dict | None:
  """The config that made checkpoint `step`, or None if nothing says.

  The one saved with the checkpoint; for a checkpoint from before configs were
  saved with them, the launch record that made it, else config.json.
  """
  try:
    saved = checkpointer.saved_metadata(step).get(CHECKPOINT_KEY)
  except Exception:  # Unreadable metadata: the restore judges damage, not this.
    saved = None
  if saved is not None:
    return saved
  made_it = [r for r in launches(workdir) if 'config' in r and r.get('start_step', 0) < step]
  return made_it[-1]['config'] if made_it else saved_config(workdir)


def mismatch_error(error: checkpoint_lib.CheckpointMismatch, config: ml_collections.ConfigDict,
                   made_by: dict | None) -> checkpoint_lib.CheckpointError:
  """The mismatch, said in terms of the config fields that changed."""
  diff = changes(made_by, as_dict(config)) if made_by is not None else []
  cause = (f'changed since the checkpoint: {describe(diff)}' if diff else
           'no record says which config made it; '
           f'differences: {"; ".join(error.differences[:3])}')
  return checkpoint_lib.CheckpointError(
      f'checkpoint at step {error.step} in {error.directory} does not fit this config, '
      f'{cause}. Rerun with the original config, or use a new --workdir; the '
      'checkpoints are left as they are.')


def check_resume(checkpointer: checkpoint_lib.Checkpointer, workdir: str,
                 config: ml_collections.ConfigDict, step: int,
                 allow_change: bool) -> list[tuple[str, Any, Any]]:
  """The changes since checkpoint `step`'s config; raises if one changes what a step means."""
  made_by = checkpoint_config(checkpointer, workdir, step)
  if made_by is None and not allow_change:
    raise ConfigChangeError(
        f'resuming {workdir} at step {step}, but no record says which config made that '
        f'checkpoint (none saved with it, no {LAUNCHES_FILE}, no {CONFIG_FILE}). Rerun '
        'with --allow_config_change to accept this config as the run\'s, or use a new '
        '--workdir.')
  diff = changes(made_by, as_dict(config)) if made_by is not None else []
  unsafe = [c for c in diff if not config_lib.resume_safe(c[0])]
  if unsafe and not allow_change:
    raise ConfigChangeError(
        f'resuming {workdir} at step {step} with a config that changes what a step '
        f'means: {describe(unsafe, "before")}. Rerun with the original config, use a new '
        '--workdir, or pass --allow_config_change to accept the change.')
  return diff


def record_launch(workdir: str, config: ml_collections.ConfigDict, *, start_step: int,
                  total_steps: int, steps_per_epoch: int, diff) -> None:
  """Appends this launch to launches.jsonl and makes its config config.json."""
  root = epath.Path(workdir)
  history = root / LAUNCHES_FILE
  exists = history.exists()
  text = _without_damaged_lines(workdir, history.read_text()) if exists else ''
  if not exists and (saved := saved_config(workdir)) is not None:
    # A workdir from before launch histories: keep what its config.json says.
    text = json.dumps({'start_step': 0, 'config': saved,
                       'note': 'recorded before launches.jsonl existed'}) + '\n'
  record = {'start_step': start_step, 'total_steps': total_steps,
            'steps_per_epoch': steps_per_epoch, 'time': time.time(),
            'host': socket.gethostname(), 'provenance': provenance.current(),
            'changed': {k: [a, b] for k, a, b in diff}, 'config': as_dict(config)}
  if text and not text.endswith('\n'):
    text += '\n'
  _write_atomically(history, text + json.dumps(record) + '\n')
  _write_atomically(root / CONFIG_FILE, config.to_json_best_effort(indent=2))


def _without_damaged_lines(workdir: str, text: str) -> str:
  """`text` less its damaged lines, which are appended to launches.jsonl.damaged."""
  records, damaged = _parse_launches(text)
  if not damaged:
    return text
  aside = epath.Path(workdir) / DAMAGED_LINES_FILE
  kept = aside.read_text() if aside.exists() else ''
  _write_atomically(aside, kept + ''.join(line + '\n' for _, line in damaged))
  logging.warning('%s; moved to %s, the %d intact record(s) kept',
                  damage_report(workdir, damaged), aside, len(records))
  numbers = {n for n, _ in damaged}
  return ''.join(line + '\n' for n, line in enumerate(text.splitlines(), 1)
                 if n not in numbers)


def schedule_change(workdir: str, config: ml_collections.ConfigDict, *, step: int,
                    total_steps: int, steps_per_epoch: int) -> str | None:
  """One line if the learning-rate schedule differs from the last launch's at `step`."""
  last = next((r for r in reversed(launches(workdir)) if 'total_steps' in r), None)
  if last is None or step == 0:
    return None
  old_optim = ml_collections.ConfigDict(last['config']['optim'])
  old_lr = float(optim.learning_rate_schedule(
      old_optim, last['steps_per_epoch'], last['total_steps'])(step))
  new_lr = float(optim.learning_rate_schedule(config.optim, steps_per_epoch, total_steps)(step))
  if last['total_steps'] == total_steps and abs(old_lr - new_lr) <= 1e-12 * max(old_lr, 1):
    return None
  return (f'schedule changed on resume: {last["total_steps"]} → {total_steps} total steps; '
          f'learning rate at step {step}: {old_lr:.4g} → {new_lr:.4g}')


def _write_atomically(path: epath.Path, text: str) -> None:
  # A crash leaves the old file or the new one, never half of one (storage.py).
  storage.write_atomic(path, text)


def launch_times(workdir: str, launch_records: list[dict] | None = None) -> list[dict]:
  """Each launch: the steps it trained and its wall time.

  A launch runs from its start to its last record in metrics.jsonl, so its
  time includes set-up, compilation, evaluation and checkpoints. Progress that
  a crash lost (records past the checkpoint resumed from are dropped) is not
  counted, nor the time after a launch's last record. `launch_records`: the
  launches if already read.
  """
  if launch_records is None:
    launch_records = launches(workdir)
  timed = [r for r in launch_records if 'time' in r]
  path = epath.Path(workdir) / metrics.METRICS_FILE
  records = sorted((r['time'], r['step']) for r in metrics.read_metrics(path)
                   if 'time' in r) if path.exists() else []
  out = []
  for i, launch in enumerate(timed):
    end = timed[i + 1]['time'] if i + 1 < len(timed) else float('inf')
    own = [(t, step) for t, step in records if launch['time'] <= t < end]
    out.append({'start_step': launch['start_step'],
                'end_step': max((step for _, step in own), default=launch['start_step']),
                'host': launch['host'], 'started': launch['time'],
                'wall_s': own[-1][0] - launch['time'] if own else 0.0,
                'changed': launch.get('changed', {}),
                'provenance': launch.get('provenance')})
  return out


def wall_summary(workdir: str) -> str:
  """'1h02m03s wall over 3 launches', or '' for a run with no launch record."""
  return _total(launch_times(workdir))


def _total(times: list[dict]) -> str:
  if not times:
    return ''
  total = sum(t['wall_s'] for t in times)
  return (f'{metrics.format_duration(total)} wall over {len(times)} '
          f'launch{"es" if len(times) > 1 else ""}')


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print('usage: python -m nin_jax.train.run_history WORKDIR', file=sys.stderr)
    return 2
  workdir = str(storage.workdir_path(argv[1]))
  records, damaged = read_launches(workdir)
  times = launch_times(workdir, records)
  if not times and damaged:
    print(f'error: {damage_report(workdir, damaged)}; it holds no intact launch record',
          file=sys.stderr)
    return 2
  if not times:
    print(f'error: {workdir} has no {LAUNCHES_FILE}: not a training workdir, or from '
          'before launch records', file=sys.stderr)
    return 2
  if damaged:
    print(f'warning: {damage_report(workdir, damaged)}; the launches listed are the '
          'intact records', file=sys.stderr)
  aside = epath.Path(workdir) / DAMAGED_LINES_FILE
  if aside.exists():
    print(f'warning: {aside} keeps {len(aside.read_text().splitlines())} damaged line(s) '
          f'set aside from {LAUNCHES_FILE}; their launches are not listed', file=sys.stderr)
  print(f'{"launch":>6}  {"host":<12} {"started (UTC)":<19}  {"steps":<15} {"wall":>10}  changed')
  for i, t in enumerate(times, 1):
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t['started']))
    steps = f'{t["start_step"]} → {t["end_step"]}'
    changed = describe([(k, a, b) for k, (a, b) in t['changed'].items()], 'before', 'then')
    print(f'{i:>6}  {t["host"]:<12} {started:<19}  {steps:<15} '
          f'{metrics.format_duration(t["wall_s"]):>10}  {changed}')
    if t['provenance']:  # Launches recorded before provenance was kept have none.
      print(f'{"":>8}{provenance.describe(t["provenance"])}')
  print(f'total: {_total(times)}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
