"""The train loop: data in, steps compiled once, logs, evals and checkpoints out.

Data path: input pipeline (this process's rows, numpy) → `DataParallel.to_global`
(one jax.Array sharded on the mesh's 'data' axis) → `train_step.train_step` (jit with
explicit in/out shardings, donated state) → metric sums kept on device and
fetched only at log intervals → writers.

Everything random is a function of (seed, step): the data order
(input_pipeline.train_indices), augmentation and dropout (nin_jax/train/train_step.py).
A run resumed from a checkpoint at step k therefore continues exactly as if
it had not stopped.

One launch is a `TrainingRun`: `open` sets it up (data, state restored or new,
outputs rewound to the start step), `train` runs the chunks of steps
(`next_chunk`, `run_chunk`) with `after_chunk` handling each chunk's end (NaN
check, log, eval, save, pause), and `finish` writes the final files. A sweep's
group of trials (nin_jax/research/trial_group.py) opens one TrainingRun per
trial, sharing the first one's data and compiled steps, and steps them in turn.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import jax
import ml_collections
from absl import logging
from flax import nnx

from nin_jax.data import datasets
from nin_jax.data import input_pipeline
from nin_jax.runtime import bucket_access
from nin_jax.runtime import checkpoint as checkpoint_lib
from nin_jax.runtime import curves
from nin_jax.runtime import metrics
from nin_jax.runtime import profiling
from nin_jax.runtime import rewind
from nin_jax.runtime import sharding
from nin_jax.runtime import storage
from nin_jax.runtime import user_errors
from nin_jax.runtime import workdir_lock
from nin_jax.train import config as config_lib
from nin_jax.train import evaluation
from nin_jax.train import predict
from nin_jax.train import run_history
from nin_jax.train import steps_per_call
from nin_jax.train import train_step
from nin_jax.train.compiled_steps import CompiledSteps
from nin_jax.train.preemption import Preemption
from nin_jax.train.step_plan import StepPlan


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
  check_workdir(workdir)
  user_errors.quiet_library_noise()
  try:
    with workdir_lock.held(str(workdir)):
      run = TrainingRun.open(config, workdir, profile_steps, allow_config_change)
      with Preemption() as preemption, run.writer:  # Leaving it flushes the writes.
        run.train(preemption)
      return run.finish(preemption)
  except BaseException as e:
    if created and jax.process_index() == 0:  # A run that wrote nothing leaves nothing.
      with contextlib.suppress(OSError):
        if not storage.is_remote(workdir):
          os.rmdir(workdir)  # Only if empty.
    if user_errors.is_out_of_space(e):
      raise user_errors.disk_full_error(workdir) from None
    raise


class TrainingRun:
  """One launch of a run, from its set-up to its final files."""

  @classmethod
  def open(cls, config, workdir, profile_steps, allow_config_change: bool, *,
           shared_with: TrainingRun | None = None) -> TrainingRun:
    """Data, the state (restored or new), outputs rewound to the start step, steps compiled.

    shared_with: a run whose config differs only in train_step.RUNTIME_FIELDS;
    this one reuses its data, device copy of the training split and compiled steps.
    """
    run = cls()
    run.config, run.workdir, run.profile_steps = config, workdir, profile_steps
    if shared_with is None:
      run._load_data()
    else:
      run.data_parallel, run.eval_batch = shared_with.data_parallel, shared_with.eval_batch
      run.data, run.plan = shared_with.data, shared_with.plan
    config_changes = run._restore_state(allow_config_change)
    run._open_outputs(config_changes)
    run._prepare_steps(shared_with)
    return run

  def _load_data(self) -> None:
    config = self.config
    self.data_parallel = sharding.DataParallel.create()
    self.data_parallel.check_batch_size(config.optim.batch_size, 'optim.batch_size')
    self.eval_batch = config_lib.eval_batch_size(config)
    self.data_parallel.check_batch_size(self.eval_batch, 'eval_batch_size')
    _check_model_fits(config)
    self.data = input_pipeline.create(config.dataset)
    self.plan = StepPlan.create(config, self.data.num_train)
    profiling.check_range(self.profile_steps, self.plan.end_step)

  def _restore_state(self, allow_config_change: bool) -> list:
    """The latest checkpoint's state, or a new one; returns what the config changed."""
    config, workdir, plan = self.config, self.workdir, self.plan
    state, self.statics = train_step.create_train_state(
        config, self.data.num_classes, self.data.image_shape, plan.steps_per_epoch,
        plan.total_steps, sharding=self.data_parallel.replicated,
        device_input=self.data.device_input)
    self.checkpointer = checkpoint_lib.Checkpointer(
        workdir, keep=config.keep_checkpoints, metadata=run_history.checkpoint_metadata(config))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    try:
      restored = self.checkpointer.restore_latest(abstract)
    except checkpoint_lib.CheckpointMismatch as e:
      made_by = run_history.checkpoint_config(self.checkpointer, workdir, e.step)
      self.checkpointer.close()
      raise run_history.mismatch_error(e, config, made_by) from None
    self.state = state if restored is None else restored
    self.start_step = self.step = int(self.state.step)
    if not self.start_step:
      return []
    return run_history.check_resume(self.checkpointer, workdir, config, self.start_step,
                                    allow_config_change)

  def _open_outputs(self, config_changes: list) -> None:
    """Rewinds the outputs to the start step, records the launch and says what runs."""
    config, workdir, plan = self.config, self.workdir, self.plan
    schedule_note = run_history.schedule_change(
        workdir, config, step=self.start_step, total_steps=plan.total_steps,
        steps_per_epoch=plan.steps_per_epoch)
    if jax.process_index() == 0:
      rewind.rewind_outputs(workdir, self.start_step)
      run_history.record_launch(workdir, config, start_step=self.start_step,
                                total_steps=plan.total_steps,
                                steps_per_epoch=plan.steps_per_epoch, diff=config_changes)
    # Process 0's writes run in a background thread: storage never stalls the steps.
    self.writer = metrics.AsyncWriter(metrics.MetricWriter(workdir))
    if jax.process_index() == 0:
      if not self.start_step:  # Once per run: the HParams view pairs it with the scalars.
        self.writer.write_hparams(config, trial_id=workdir.name)
      predict.write_inference_files(workdir, config, self.data.preprocessing,
                                    predict.class_names(config.dataset.name,
                                                        self.data.num_classes))
    metrics.console(self._start_line())
    if config_changes:
      metrics.console('config changed on resume: ' + run_history.describe(
          config_changes, 'before', 'now'))
    if schedule_note:
      metrics.console(schedule_note)

  def _start_line(self) -> str:
    config, plan = self.config, self.plan
    params = sum(x.size for x in jax.tree.leaves(self.state.params))
    early = (f'; max_steps stops the {plan.total_steps}-step schedule there'
             if plan.end_step < plan.total_steps else '')
    return (f'{config.model.preset} on {config.dataset.name}: {params:,} params, '
            f'{self.data_parallel.num_devices} {jax.default_backend()} device(s) in '
            f'{jax.process_count()} process(es), global batch {config.optim.batch_size}, '
            f'{"resuming at" if self.start_step else "starting at"} step {self.start_step} of '
            f'{plan.end_step} ({plan.steps_per_epoch} per epoch{early}); workdir {self.workdir}')

  def _prepare_steps(self, shared_with: TrainingRun | None) -> None:
    """Compiled calls, the training split's place, the batches and the chunk ends."""
    config, backend = self.config, jax.default_backend()
    self.steps = (CompiledSteps.create(self.statics, self.data_parallel) if shared_with is None
                  else shared_with.steps)
    self.hparams = self.data_parallel.replicate(self.statics.hyperparams)
    self.sums = self.steps.zero_sums()
    self.last_eval: dict[str, float] = {}
    self.progress = metrics.Progress(self.plan.end_step, self.plan.steps_per_epoch,
                                     config.optim.batch_size, self.start_step,
                                     stream=sys.stdout)  # A group's trial: its prefixed stream.
    on_device = steps_per_call.data_on_device(config.dataset, self.data, backend)
    # Small datasets fit in device memory: the host then sends only indices.
    if shared_with is not None:
      self.device_data = shared_with.device_data
    else:
      self.device_data = self.data_parallel.replicate(
          {'image': self.data.train_images, 'label': self.data.train_labels}
      ) if on_device else None
    self.per_dispatch = steps_per_call.steps_per_dispatch(config.steps_per_dispatch, on_device,
                                                          backend)
    metrics.console(f'training split {"on device" if on_device else "streamed from the host"};'
                    f' up to {self.per_dispatch} step(s) per dispatch')
    batch_args = (config.optim.batch_size, config.seed, self.start_step)
    self.batches = (self.data.train_batches(*batch_args, indices_only=True) if on_device
                    else self.data.train_batches(*batch_args))
    profile_steps = self.profile_steps
    self.profiler = profiling.StepProfiler(str(self.workdir / profiling.PROFILE_DIR),
                                           profile_steps)
    self.pause_steps = {int(s) for s in config.testing.pause_at_steps}
    # Chunk ends: test pauses, and every step of a profiled range (traced one by one).
    self.chunk_stops = self.pause_steps | (
        set(range(profile_steps[0], profile_steps[1] + 1)) if profile_steps else set())

  def train(self, preemption: Preemption) -> None:
    """Trains to the plan's end step, or until a stop request is honoured."""
    while self.step < self.plan.end_step:
      n = self.next_chunk()
      self.run_chunk(n)
      # A stop request is honoured at the chunk's end. Every step is reported:
      # JAX's multi-process sync point may fall on any of them.
      stop = any([preemption.should_stop(s) for s in range(self.step - n + 1, self.step + 1)])
      self.after_chunk(stop)
      if stop:
        if preemption.signal != 'SIGINT':  # After a Ctrl-C the command line says it.
          logging.warning('preempted: checkpoint at step %d written; rerun to resume', self.step)
        return

  def next_chunk(self) -> int:
    """Up to per_dispatch steps in one call, ending exactly at the next log/eval/checkpoint step."""
    config, plan = self.config, self.plan
    return steps_per_call.next_chunk(
        self.step, self.per_dispatch, plan.end_step,
        (config.log_every_steps, config.checkpoint_every_steps, plan.eval_every),
        self.chunk_stops)

  def next_batches(self, n: int):
    """The host's batch (n = 1) or stack of n batches for the next chunk."""
    return next(self.batches) if n == 1 else steps_per_call.stack_batches(self.batches, n)

  def run_chunk(self, n: int) -> None:
    """n steps, in one compiled call."""
    with self.profiler.step(self.step):
      batches = self.data_parallel.to_global(self.next_batches(n), stacked=n > 1)
      step = self.steps.one if n == 1 else self.steps.many
      self.state, self.sums = step(self.state, self.sums, batches, self.device_data,
                                   self.hparams)
      self.profiler.wait(self.sums)
    self.step += n

  def after_chunk(self, stop: bool) -> None:
    """The chunk's end: NaN check, log, eval, save and the tests' pause, as due."""
    config, step = self.config, self.step
    is_last = step == self.plan.end_step
    eval_now = step % self.plan.eval_every == 0 or is_last
    log_now = step % config.log_every_steps == 0 or is_last or stop or eval_now
    save_now = step % config.checkpoint_every_steps == 0 or is_last or stop
    # Fetching the sums is the NaN/Inf check. Every save is preceded by it, so a
    # poisoned state is never checkpointed over the last good one.
    if log_now or save_now:
      host = jax.device_get(self.sums)
      self._check_finite(host)
      if log_now:
        self._log(host)
    if eval_now:
      self._evaluate_and_write()
    if save_now:
      with self.progress.paused():
        self.writer.before_checkpoint()  # Records up to this step go out with it.
        self.checkpointer.save(step, self.state)
    if step in self.pause_steps:
      self._pause(saved=save_now)

  def _check_finite(self, host_sums) -> None:
    if host_sums['first_bad_step'] >= 0:
      self.checkpointer.wait()
      raise NonFiniteError(
          f'loss or gradients became NaN/Inf at step {int(host_sums["first_bad_step"]) + 1};'
          f' stopping. {_last_good(self.checkpointer)} Lower optim.learning_rate or '
          'enable model.batch_norm.')

  def _log(self, host_sums) -> None:
    step = self.step
    scalars = {'train/loss': host_sums['loss'] / host_sums['count'],
               'train/accuracy': host_sums['correct'] / host_sums['count'],
               'train/learning_rate': float(self.statics.schedule(step - 1))}
    images_per_s = self.progress.report(step, scalars)
    self.writer.write(step, {**scalars, 'train/images_per_s': images_per_s,
                             'epoch': step / self.plan.steps_per_epoch})
    self.sums = self.steps.zero_sums()

  def _evaluate_and_write(self) -> None:
    t0 = time.time()
    with self.progress.paused():
      self.last_eval = self.evaluate()
    self.writer.write(self.step, {**self.last_eval, 'epoch': self.step / self.plan.steps_per_epoch})
    if jax.process_index() == 0:
      shown = ' | '.join(f'{k} {v:.4f}' for k, v in self.last_eval.items()
                         if not k.endswith('/examples'))
      print(f'eval at step {self.step}: {shown} ({int(self.last_eval["test/examples"])} '
            f'images, {time.time() - t0:.1f}s)', flush=True)

  def evaluate(self) -> dict[str, float]:
    return evaluation.evaluate(lambda state, batch: self.steps.eval(state, batch, self.hparams),
                               self.state, self.data, self.data_parallel, self.eval_batch)

  def _pause(self, saved: bool) -> None:
    """Test-only (config.testing): an exact kill point for tests."""
    self.writer.flush()  # The records so far are in storage,
    if not saved:
      self.checkpointer.wait()  # earlier saves are on disk, this one in flight.
    metrics.console(f'TESTING: paused after step {self.step}')
    os.kill(os.getpid(), signal.SIGSTOP)

  def finish(self, preemption: Preemption) -> dict:
    """Closes the run; at its end, also the final metrics, plots and exported model."""
    self.profiler.close()  # The run ended before step B.
    # Multi-process: every host ends with the same model.
    self.data_parallel.assert_replicas_agree(self.state)
    self.checkpointer.close()
    at_end = self.step == self.plan.end_step
    if at_end and not self.last_eval:  # Resumed after the end: report only.
      self.last_eval = self.evaluate()
    if at_end and jax.process_index() == 0 and self.config.write_plots:
      self.writer.upload()  # A bucket's records, before the plot reads them back.
      self.writer.submit(curves.plot_curves, self.workdir)
    self.writer.close()
    if at_end and jax.process_index() == 0:
      self._write_final_files()
    return {'step': self.step, 'preempted': not at_end, 'signal': preemption.signal,
            **{k: float(v) for k, v in self.last_eval.items()}}

  def _write_final_files(self) -> None:
    storage.write_atomic(self.workdir / 'final_metrics.json', json.dumps(
        {'step': self.step, **{k: float(v) for k, v in self.last_eval.items()}}, indent=2))
    params, rest = jax.tree.map(lambda x: x.addressable_data(0),
                                (self.state.params, self.state.batch_stats))
    predict.export(self.workdir, nnx.merge(self.statics.graphdef, params, rest))


def check_workdir(workdir) -> None:
  """Creates the workdir; a file there, or one that cannot be written, is a user error."""
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
    nnx.eval_shape(lambda: train_step.build_model(config.model, info.num_classes,
                                                  info.image_shape))
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
