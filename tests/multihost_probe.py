"""experiments/fashion_mnist.py with a test's probe inside (run it with the same flags).

For the multi-process tests, each process of a run records what it did:
- every call to `multihost_utils.assert_equal`, the all-gather that checks all
  hosts hold equal values (`jax.device_put` of a host value onto a mesh that
  spans processes makes one per leaf; barriers make one too), with the phase
  it came in ('start-up' before the step loop, 'loop', 'end') and the shapes
  it checked;
- the step its checkpoint restore ended on (None: started fresh).
With NIN_PROBE_UNREADABLE_STEP=k this process alone cannot read checkpoint k
(a transient read error or a damaged file only this host sees).
What it saw goes to $NIN_PROBE_OUT.<process index>.json.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import nin_jax

nin_jax.configure_process()  # What experiments/fashion_mnist.py's entry does, before jax.

from jax.experimental import multihost_utils

from nin_jax.runtime import checkpoint
from nin_jax.cli import train_command as cli
from nin_jax.train import loop as train

seen = {'equality_checks': [], 'restored_step': None}
phase = 'start-up'


def _install():
  real_assert_equal = multihost_utils.assert_equal

  def counted_assert_equal(in_tree, fail_message=''):
    import jax
    import numpy as np
    shapes = [list(np.shape(x)) for x in jax.tree.leaves(in_tree)]
    seen['equality_checks'].append({'phase': phase, 'shapes': shapes})
    return real_assert_equal(in_tree, fail_message)

  # jax.device_put's check looks it up on the module at each call.
  multihost_utils.assert_equal = counted_assert_equal

  def set_phase(name, method):
    def wrapped(self, *args):
      global phase
      phase = name
      return method(self, *args)
    return wrapped
  train.Preemption.__enter__ = set_phase('loop', train.Preemption.__enter__)
  train.Preemption.__exit__ = set_phase('end', train.Preemption.__exit__)

  real_restore_latest = checkpoint.Checkpointer.restore_latest

  def restore_latest(self, abstract_state):
    state = real_restore_latest(self, abstract_state)
    seen['restored_step'] = None if state is None else int(state.step)
    return state
  checkpoint.Checkpointer.restore_latest = restore_latest

  unreadable = os.environ.get('NIN_PROBE_UNREADABLE_STEP')
  if unreadable:
    real_restore = checkpoint.ocp.Checkpointer.restore

    def restore(self, directory, *args, **kwargs):  # directory: <checkpoints>/<step>/<item>
      if os.path.basename(os.path.dirname(os.fspath(directory))) == unreadable:
        raise OSError(f'probe: {directory} cannot be read on this host')
      return real_restore(self, directory, *args, **kwargs)
    checkpoint.ocp.Checkpointer.restore = restore

  real_train = train.train_and_evaluate

  def train_and_evaluate(*args, **kwargs):
    import jax
    try:
      return real_train(*args, **kwargs)
    finally:
      with open(f'{os.environ["NIN_PROBE_OUT"]}.{jax.process_index()}.json', 'w') as f:
        json.dump(seen, f)
  train.train_and_evaluate = train_and_evaluate


if __name__ == '__main__':
  _install()
  cli.run(os.path.join(REPO, 'nin_jax', 'configs', 'fashion_mnist.py'))
