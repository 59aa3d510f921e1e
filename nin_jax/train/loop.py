"""The train loop: data in, steps compiled once, logs, evals and checkpoints out.

Data path: input pipeline (this process's rows, numpy) → `DataParallel.to_global`
(one jax.Array sharded on the mesh's 'data' axis) → `train_step.train_step` (jit with
explicit in/out shardings, donated state) → metric sums kept on device and
fetched only at log intervals → writers.

Everything random is a function of (seed, step): the data order
(input_pipeline.train_indices), augmentation and dropout (nin_jax/train/train_step.py).
A run resumed from a checkpoint at step k therefore continues exactly as if
it had not stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from nin_jax.runtime import checkpoint as checkpoint_lib
from nin_jax.train import config as config_lib
from nin_jax.runtime import bucket_access
from nin_jax.data import datasets
from nin_jax.train import steps_per_call
from nin_jax.runtime import event_files
from nin_jax.runtime import user_errors
from nin_jax.data import input_pipeline
from nin_jax.runtime import metrics
from nin_jax.train import predict
from nin_jax.runtime import profiling
from nin_jax.train import run_history
from nin_jax.runtime import sharding
from nin_jax.train import train_step
from nin_jax.runtime import storage
from nin_jax.runtime import workdir_lock


class Preemption:
  """Turns SIGTERM or a Ctrl-C into a request to checkpoint and exit at the next step.

  A second Ctrl-C aborts at once, without saving.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signal = None  # The name of the signal that asked, e.g. 'SIGINT'.
    self._previous = {}

  def __enter__(self):
    if jax.process_count() > 1:
      # JAX's preemption service catches SIGTERM itself and names one step for
      # all processes to stop at; a Python handler would replace its handler,
      # and a process stopping on its own leaves the others in a collective.
      return self
    try:
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    except ValueError:  # Not the main thread (e.g. inside a test runner thread).
      self._previous = {}
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.requested and signum == signal.SIGINT:
      print('second Ctrl-C: stopping now, without saving', file=sys.stderr, flush=True)
      os._exit(130)  # At once: no checkpoint, no cleanup (the lock is seen as stale).
    if self.requested:  # A sweep passes a Ctrl-C on as SIGTERM: already stopping.
      return
    if signum == signal.SIGINT:
      print('Ctrl-C: saving a checkpoint at the next step, then stopping (Ctrl-C again to '
            'stop now, without saving)', file=sys.stderr, flush=True)
    else:
      logging.warning('%s: saving a checkpoint and stopping at the next step', name)
    self.requested, self.signal = True, name

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # All processes must agree on the step; JAX's preemption sync service does.
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


class NonFiniteError(FloatingPointError):
  pass


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       profile_steps: tuple[int, int] | None = None,
                       allow_config_change: bool = False) -> dict:
  """Trains and evaluates config's run in workdir, resuming if it holds checkpoints.

  profile_steps: (A, B) traces steps A..B-1 with jax.profiler into
  workdir/profile (nin_jax/runtime/profiling.py).
  Holds the workdir's lock throughout. Resuming with a config that changes
  what a step means is refused unless `allow_config_change`.
  Returns the final metrics (test accuracy etc.) as a dict.
  """
  config_lib.validate(config)
  workdir = storage.workdir_path(workdir)  # A local directory or a gs:// URL.
  if storage.is_remote(workdir):  # Network, credentials, bucket, permissions: said now.
    bucket_access.check_every_process(str(workdir))
  created = not workdir.exists()
  _check_workdir(workdir)
  user_errors.quiet_library_noise()
  try:
    with workdir_lock.held(str(workdir)):
      return _train_and_evaluate(config, workdir, profile_steps, allow_config_change)
  except BaseException as e:
    if created and jax.process_index() == 0:  # A run that wrote nothing leaves nothing.
      with contextlib.suppress(OSError):
        if not storage.is_remote(workdir):
          os.rmdir(workdir)  # Only if empty.
    if user_errors.is_out_of_space(e):
      raise user_errors.disk_full_error(workdir) from None
    raise


def _train_and_evaluate(config, workdir: str, profile_steps, allow_config_change: bool) -> dict:
  data_parallel = sharding.DataParallel.create()
  data_parallel.check_batch_size(config.optim.batch_size, 'optim.batch_size')
  eval_batch = config_lib.eval_batch_size(config)
  data_parallel.check_batch_size(eval_batch, 'eval_batch_size')
  _check_model_fits(config)

  data = input_pipeline.create(config.dataset)
  num_train = data.num_train
  if config.optim.batch_size > num_train:
    raise ValueError(f'config.optim.batch_size={config.optim.batch_size} is larger '
                     f'than the {num_train} training images')
  steps_per_epoch = input_pipeline.steps_per_epoch(num_train, config.optim.batch_size)
  # The schedule spans num_epochs; max_steps only stops the run early, so a
  # max_steps run is a prefix of the full one (and resumes into it).
  total_steps = int(round(config.num_epochs * steps_per_epoch))
  end_step = min(total_steps, config.max_steps) if config.max_steps else total_steps
  profiling.check_range(profile_steps, end_step)
  eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))

  state, statics = train_step.create_train_state(config, data.num_classes, data.image_shape,
                                         steps_per_epoch, total_steps,
                                         sharding=data_parallel.replicated)
  checkpointer = checkpoint_lib.Checkpointer(
      workdir, keep=config.keep_checkpoints, metadata=run_history.checkpoint_metadata(config))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  try:
    restored = checkpointer.restore_latest(abstract)
  except checkpoint_lib.CheckpointMismatch as e:
    made_by = run_history.checkpoint_config(checkpointer, workdir, e.step)
    checkpointer.close()
    raise run_history.mismatch_error(e, config, made_by) from None
  if restored is not None:
    state = restored
  start_step = int(state.step)
  config_changes = run_history.check_resume(
      checkpointer, workdir, config, start_step, allow_config_change) if start_step else []
  schedule_note = run_history.schedule_change(
      workdir, config, step=start_step, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
  if jax.process_index() == 0:
    _truncate_metrics(workdir / metrics.METRICS_FILE, start_step)
    event_files.drop_events_after(workdir / 'tensorboard', start_step)
    run_history.record_launch(workdir, config, start_step=start_step, total_steps=total_steps,
                              steps_per_epoch=steps_per_epoch, diff=config_changes)
  # Process 0's writes run in a background thread: storage never stalls the steps.
  writer = metrics.AsyncWriter(metrics.MetricWriter(workdir))
  if jax.process_index() == 0:
    if not start_step:  # Once per run: the HParams view pairs it with the scalars.
      writer.write_hparams(config, trial_id=workdir.name)
    predict.write_inference_files(workdir, config, data.preprocessing, predict.class_names(
        config.dataset.name, data.num_classes))
  early = (f'; max_steps stops the {total_steps}-step schedule there'
           if end_step < total_steps else '')
  metrics.console(
      f'{config.model.preset} on {config.dataset.name}: {sum(x.size for x in jax.tree.leaves(state.params)):,} params, '
      f'{data_parallel.num_devices} {jax.default_backend()} device(s) in {jax.process_count()} '
      f'process(es), global batch {config.optim.batch_size}, '
      f'{"resuming at" if start_step else "starting at"} step {start_step} of '
      f'{end_step} ({steps_per_epoch} per epoch{early}); workdir {workdir}')
  if config_changes:
    metrics.console('config changed on resume: ' + run_history.describe(
        config_changes, 'before', 'now'))
  if schedule_note:
    metrics.console(schedule_note)

  replicated, batch_sharding = data_parallel.replicated, data_parallel.batch
  p_train_step = jax.jit(
      functools.partial(train_step.train_step, statics),
      in_shardings=(replicated, replicated, batch_sharding, replicated),
      out_shardings=(replicated, replicated), donate_argnums=(0, 1))
  p_eval_step = jax.jit(functools.partial(train_step.eval_step, statics),
                        in_shardings=(replicated, batch_sharding), out_shardings=replicated)

  def evaluate_split(state, batches, prefix: str) -> dict[str, float]:
    totals = None
    for batch in batches:
      out = p_eval_step(state, data_parallel.to_global(batch))
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    n = totals['count']
    result = {f'{prefix}/loss': totals['loss'] / n, f'{prefix}/accuracy': totals['correct'] / n,
              f'{prefix}/examples': n}
    if data.num_classes > 10:
      result[f'{prefix}/accuracy_top5'] = totals['correct_top5'] / n
    return result

  def evaluate(state) -> dict[str, float]:
    """Test metrics, and validation metrics beside them when images were held out."""
    result = evaluate_split(state, data.eval_batches(eval_batch), 'test')
    if getattr(data, 'num_validation', 0):
      result.update(evaluate_split(state, data.validation_batches(eval_batch), 'val'))
    return result

  progress = metrics.Progress(end_step, steps_per_epoch, config.optim.batch_size,
                              start_step)
  # Made on device: a host value would be equality-checked across hosts at every log.
  zero_sums = jax.jit(train_step.zero_train_sums, out_shardings=replicated)
  sums = zero_sums()
  last_eval: dict[str, float] = {}
  on_device = steps_per_call.data_on_device(config.dataset, data, jax.default_backend())
  # Small datasets fit in device memory: the host then sends only indices.
  device_data = data_parallel.replicate({'image': data.train_images, 'label': data.train_labels}
                             ) if on_device else None
  per_dispatch = steps_per_call.steps_per_dispatch(config.steps_per_dispatch, on_device,
                                             jax.default_backend())
  p_train_steps = jax.jit(
      functools.partial(train_step.train_steps, statics),
      in_shardings=(replicated, replicated, data_parallel.stacked_batch, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=(0, 1))
  boundaries = (config.log_every_steps, config.checkpoint_every_steps, eval_every)
  metrics.console(f'training split {"on device" if on_device else "streamed from the host"};'
                  f' up to {per_dispatch} step(s) per dispatch')
  if on_device:
    batches = data.train_batches(config.optim.batch_size, config.seed, start_step,
                                 indices_only=True)
  else:
    batches = data.train_batches(config.optim.batch_size, config.seed, start_step)
  step = start_step
  profiler = profiling.StepProfiler(str(workdir / profiling.PROFILE_DIR), profile_steps)
  pause_steps = {int(s) for s in config.testing.pause_at_steps}
  # Chunk ends: test pauses, and every step of a profiled range (traced one by one).
  chunk_stops = pause_steps | (set(range(profile_steps[0], profile_steps[1] + 1))
                               if profile_steps else set())
  with Preemption() as preemption, writer:  # Leaving it flushes the writes, error or not.
    while step < end_step:
      # Up to per_dispatch steps in one call, ending exactly at the next
      # log/eval/checkpoint step.
      n = steps_per_call.next_chunk(step, per_dispatch, end_step, boundaries, chunk_stops)
      with profiler.step(step):
        if n == 1:
          state, sums = p_train_step(state, sums, data_parallel.to_global(next(batches)), device_data)
        else:
          chunk = data_parallel.to_global(steps_per_call.stack_batches(batches, n), stacked=True)
          state, sums = p_train_steps(state, sums, chunk, device_data)
        profiler.wait(sums)
      step += n
      is_last = step == end_step
      # A stop request is honoured at the chunk's end. Every step is reported:
      # JAX's multi-process sync point may fall on any of them.
      stop = any([preemption.should_stop(s) for s in range(step - n + 1, step + 1)])
      log_now = step % config.log_every_steps == 0 or is_last or stop or (step % eval_every == 0)
      save_now = step % config.checkpoint_every_steps == 0 or is_last or stop
      # Fetching the sums is the NaN/Inf check. Every save is preceded by it, so a
      # poisoned state is never checkpointed over the last good one.
      host = jax.device_get(sums) if log_now or save_now else None
      if host is not None and host['first_bad_step'] >= 0:
        checkpointer.wait()
        raise NonFiniteError(
            f'loss or gradients became NaN/Inf at step {int(host["first_bad_step"]) + 1};'
            f' stopping. {_last_good(checkpointer)} Lower optim.learning_rate or '
            'enable model.batch_norm.')
      if log_now:
        scalars = {'train/loss': host['loss'] / host['count'],
                   'train/accuracy': host['correct'] / host['count'],
                   'train/learning_rate': float(statics.schedule(step - 1))}
        images_per_s = progress.report(step, scalars)
        writer.write(step, {**scalars, 'train/images_per_s': images_per_s,
                            'epoch': step / steps_per_epoch})
        sums = zero_sums()
      if step % eval_every == 0 or is_last:
        t0 = time.time()
        with progress.paused():
          last_eval = evaluate(state)
        writer.write(step, {**last_eval, 'epoch': step / steps_per_epoch})
        if jax.process_index() == 0:
          print(f'eval at step {step}: ' + ' | '.join(
              f'{k} {v:.4f}' for k, v in last_eval.items() if not k.endswith('/examples'))
              + f' ({int(last_eval["test/examples"])} images, {time.time() - t0:.1f}s)',
              flush=True)
      if save_now:
        with progress.paused():
          writer.before_checkpoint()  # Records up to this step go out with it.
          checkpointer.save(step, state)
      if step in pause_steps:  # Test-only (config.testing): a kill point for tests.
        writer.flush()  # Exact kill points: the records so far are in storage,
        if not save_now:
          checkpointer.wait()  # earlier saves are on disk, this one in flight.
        metrics.console(f'TESTING: paused after step {step}')
        os.kill(os.getpid(), signal.SIGSTOP)
      if stop:
        if preemption.signal != 'SIGINT':  # After a Ctrl-C the command line says it.
          logging.warning('preempted: checkpoint at step %d written; rerun to resume', step)
        break
  profiler.close()  # The run ended before step B.
  data_parallel.assert_replicas_agree(state)  # Multi-process: every host ends with the same model.
  checkpointer.close()
  if step == end_step and not last_eval:  # Resumed after the end: report only.
    last_eval = evaluate(state)
  if step == end_step and jax.process_index() == 0 and config.write_plots:
    writer.upload()  # A bucket's records, before the plot reads them back.
    writer.submit(metrics.plot_curves, workdir)
  writer.close()
  if step == end_step and jax.process_index() == 0:
    storage.write_atomic(workdir / 'final_metrics.json', json.dumps(
        {'step': step, **{k: float(v) for k, v in last_eval.items()}}, indent=2))
    params, rest = jax.tree.map(lambda x: x.addressable_data(0),
                                (state.params, state.batch_stats))
    predict.export(workdir, nnx.merge(statics.graphdef, params, rest))
  return {'step': step, 'preempted': step < end_step, 'signal': preemption.signal,
          **{k: float(v) for k, v in last_eval.items()}}


def _check_workdir(workdir) -> None:
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f'workdir {workdir} is a file, not a directory')
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f'cannot create workdir {workdir}: {e.strerror or e}') from None
  # A bucket's permissions show on the first write (process 0's config.json).
  if not storage.is_remote(workdir) and not os.access(workdir, os.W_OK):
    raise ValueError(f'workdir {workdir} is not writable')


def _check_model_fits(config) -> None:
  """A preset that cannot pool the dataset's images down is a config error.

  Said before any data is loaded or anything compiled; eval_shape allocates nothing.
  """
  info = datasets.DATASETS[config.dataset.name]
  try:
    nnx.eval_shape(lambda: train_step.build_model(config.model, info.num_classes, info.image_shape))
  except ValueError as e:
    raise ValueError(
        f'config.model.preset={config.model.preset!r} does not fit '
        f'config.dataset.name={config.dataset.name!r} ({info.image_shape[0]}×'
        f'{info.image_shape[1]} images): {e}') from None


def _last_good(checkpointer: checkpoint_lib.Checkpointer) -> str:
  latest = checkpointer.latest_step()
  if latest is None:
    return 'No checkpoint had been written yet.'
  return f'The last good checkpoint (step {latest}) in {checkpointer.directory} is kept.'


def _truncate_metrics(path, step: int) -> None:
  """Drops metrics.jsonl records after `step`, the step this run starts from.

  They came from progress that a crash lost (the checkpoint is older) and the
  resumed run writes them again, so the file keeps one record per step and
  kind, in order. A line cut short by the crash is dropped too.
  """
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        keep.append(line if line.endswith('\n') else line + '\n')
    except (ValueError, KeyError, TypeError):
      pass
  if keep != lines:
    storage.write_atomic(path, ''.join(keep))  # A second crash leaves one or the other.
