"""The train state and the compiled pieces of a run: the model, one SGD step, one eval step.

Everything random is a function of (seed, step): augmentation and dropout keys
are folded from the seed with the step, so a run resumed at step k computes
exactly what an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from nin_jax.data import augment as augment_lib
from nin_jax.model import nin
from nin_jax.train import optim
from nin_jax.model import architectures

# Streams folded into the seed so dropout, augmentation and init never share keys.
_INIT, _DROPOUT, _AUGMENT = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds: resume from it and nothing is lost."""
  step: jax.Array
  params: Any        # pure dict of nnx.Param values
  batch_stats: Any   # pure dict of the model's other state (batch norm statistics)
  opt_state: Any


@flax.struct.dataclass
class Hyperparams:
  """A run's hyperparameters as runtime values (arrays), not constants of the program.

  Trials that differ only in these share one compiled step: a sweep's group
  passes each trial's own (nin_jax/research/trial_group.py). `of(config, ...)`
  makes them from a config; `RUNTIME_FIELDS` names the config fields they cover.
  """
  learning_rates: Any    # float32[total_steps]: the schedule, tabulated by step
  bias_learning_rates: Any  # the biases' (decay_scope='weights'), else the same
  weight_decay: Any
  momentum: Any
  label_smoothing: Any
  dropout: Any           # layers.DropoutRate of model.dropout_rate
  seed: Any              # int32: augmentation, dropout (init and data order: host side)
  nan_at_step: Any       # int32: config.testing.inject_nan_at_step (0: never)

  @classmethod
  def of(cls, config, steps_per_epoch: int, total_steps: int) -> 'Hyperparams':
    schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, total_steps)
    bias_schedule = optim.bias_learning_rate_schedule(config.optim, steps_per_epoch,
                                                      total_steps)
    rates = optim.tabulate(schedule, total_steps)
    return cls(
        learning_rates=rates,
        bias_learning_rates=rates if bias_schedule is None else optim.tabulate(
            bias_schedule, total_steps),
        weight_decay=np.float32(config.optim.weight_decay),
        momentum=np.float32(config.optim.momentum),
        label_smoothing=np.float32(config.optim.label_smoothing),
        dropout=nin.DropoutRate.of(config.model.dropout_rate),
        seed=np.int32(config.seed),
        nan_at_step=np.int32(config.testing.inject_nan_at_step))


# The config fields Hyperparams carries: trials differing only in these (and in
# what never reaches the step, e.g. where they log) run as one program. The
# schedule's fields are here because the step reads the schedule as a table.
RUNTIME_FIELDS = (
    'seed', 'optim.learning_rate', 'optim.reference_batch_size', 'optim.schedule',
    'optim.decay_epochs', 'optim.decay_factor', 'optim.warmup_epochs',
    'optim.weight_decay', 'optim.momentum', 'optim.label_smoothing',
    'model.dropout_rate', 'testing.inject_nan_at_step')


@dataclasses.dataclass(frozen=True)
class StepStatics:
  """The static pieces a run compiles against."""
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  num_classes: int
  config: ml_collections.ConfigDict
  roles: Any = None            # the params' roles (nin.NIN.param_roles)
  hyperparams: Hyperparams | None = None  # the config's, used when a step is given none
  # batch → the model's images, on device (the data's `device_input`; None: batch['image']).
  device_input: Any = None


def model_input(statics: StepStatics, batch):
  """The model's images: batch['image'], or what the data's device_input makes of the batch."""
  return batch['image'] if statics.device_input is None else statics.device_input(batch)


def build_model(model_config, num_classes: int, input_shape, *, seed: int = 0) -> nin.NIN:
  """The NIN that config.model names, for `num_classes` and `input_shape` (H, W, C)."""
  spec = architectures.get_preset(model_config.preset)
  if spec.num_classes != num_classes:
    spec = architectures.with_classes(spec, num_classes)
  spec = architectures.scaled(spec, model_config.width_multiplier)
  return nin.NIN(
      spec, input_shape=input_shape, head=model_config.head,
      fc_hidden=tuple(model_config.fc_hidden), fc_dropout=model_config.fc_dropout,
      dropout_rate=model_config.dropout_rate,
      # Runs saved before the option existed used inverted dropout.
      dropout_form=model_config.get('dropout_form', 'inverted'),
      batch_norm=model_config.batch_norm,
      init=model_config.init, conv_impl=model_config.conv_impl,
      dtype=jnp.dtype(model_config.dtype),
      rngs=nnx.Rngs(params=jax.random.fold_in(jax.random.key(seed), _INIT)))


def create_train_state(config, num_classes: int, input_shape, steps_per_epoch: int,
                       total_steps: int, *, sharding=None,
                       device_input=None) -> tuple[TrainState, StepStatics]:
  """The initial train state and the run's static StepStatics.

  `device_input`: what the steps make of a batch before the model (StepStatics).
  With `sharding`, one jit creates the state straight into arrays of that
  sharding: no host value is copied to a device. (On a mesh that spans
  processes, `jax.device_put` of host values first all-gathers every leaf to
  check that all hosts passed the same values.)
  """
  statics = None
  hyperparams = Hyperparams.of(config, steps_per_epoch, total_steps)  # Not traced: host values.

  def init() -> TrainState:
    nonlocal statics
    model = build_model(config.model, num_classes, input_shape, seed=config.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, total_steps)
    bias_schedule = optim.bias_learning_rate_schedule(config.optim, steps_per_epoch,
                                                      total_steps)
    tx = optim.create_optimizer(config.optim, model.param_roles(params), schedule,
                                bias_schedule)
    # Static: safe out of a trace.
    statics = StepStatics(graphdef, tx, schedule, num_classes, config,
                          roles=model.param_roles(params),
                          hyperparams=hyperparams, device_input=device_input)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=rest, opt_state=tx.init(params))

  state = init() if sharding is None else jax.jit(init, out_shardings=sharding)()
  return state, statics


def _cross_entropy(logits, labels, num_classes: int, label_smoothing):
  targets = jax.nn.one_hot(labels, num_classes)
  if not isinstance(label_smoothing, (int, float)) or label_smoothing:
    # A runtime value: (1 - 0)·t + 0/n is t exactly, so smoothing 0 is none.
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def _as_arrays(hparams: Hyperparams) -> Hyperparams:
  return jax.tree.map(jnp.asarray, hparams)  # Host values (numpy) index with traced steps.


def optimizer(statics: StepStatics, hparams: Hyperparams) -> optax.GradientTransformation:
  """The run's SGD (optim.create_optimizer) with hparams' rates, decay and momentum."""
  cfg = statics.config.optim
  bias_schedule = None if cfg.get('decay_scope', 'all') == 'all' else (
      lambda count: hparams.bias_learning_rates[count])
  return optim.create_optimizer(
      cfg, statics.roles, lambda count: hparams.learning_rates[count], bias_schedule,
      weight_decay=hparams.weight_decay, momentum=hparams.momentum)


def zero_train_sums():
  return {'loss': jnp.zeros(()), 'correct': jnp.zeros(()), 'count': jnp.zeros(()),
          'first_bad_step': jnp.full((), -1, jnp.int32)}


def train_step(statics: StepStatics, state: TrainState, sums, batch, device_data=None,
               hparams: Hyperparams | None = None):
  """One SGD step on a global batch; adds its loss/accuracy to the on-device sums.

  `batch` holds images and labels, or (with `device_data`, the whole training
  split already on device) the indices of the rows to gather. `hparams`: the
  run's Hyperparams as arguments (None: the config's, built into the program).
  """
  cfg = statics.config
  hp = _as_arrays(statics.hyperparams if hparams is None else hparams)
  if device_data is not None:
    batch = {k: device_data[k][batch['index']] for k in ('image', 'label')}
  seed_key = jax.random.key(hp.seed)
  images = augment_lib.augment(
      model_input(statics, batch), jax.random.fold_in(jax.random.fold_in(seed_key, _AUGMENT), state.step),
      translate=cfg.augment.translate, flip=cfg.augment.flip)
  dropout_key = jax.random.fold_in(jax.random.fold_in(seed_key, _DROPOUT), state.step)

  def loss_fn(params, batch_stats):
    # copy=True: a fresh module per trace, as jax.grad needs (flax#5050).
    model = nnx.merge(statics.graphdef, params, batch_stats, copy=True)
    logits = model(images, train=True, dropout_key=dropout_key, dropout_rate=hp.dropout)
    loss = _cross_entropy(logits, batch['label'], statics.num_classes,
                          hp.label_smoothing).mean()
    # Test-only fault (config.testing); the step counts from 1, so 0 never fires.
    loss = loss * jnp.where(state.step + 1 == hp.nan_at_step, jnp.nan, 1.0)
    new_stats = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
    return loss, (logits, new_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.batch_stats)
  updates, opt_state = optimizer(statics, hp).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
  bad_step = jnp.where((sums['first_bad_step'] < 0) & ~finite, state.step,
                       sums['first_bad_step'])
  n = batch['label'].shape[0]
  sums = {'loss': sums['loss'] + loss * n,
          'correct': sums['correct'] + jnp.sum(jnp.argmax(logits, -1) == batch['label']),
          'count': sums['count'] + n,
          'first_bad_step': bad_step}
  state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                     opt_state=opt_state)
  return state, sums


def train_steps(statics: StepStatics, state: TrainState, sums, batches, device_data=None,
                hparams: Hyperparams | None = None):
  """`train_step` over each batch along `batches`' leading axis, in one compiled call.

  A loop over k steps inside one dispatch (lax.scan) takes the host out of the
  per-step path on an accelerator. Keys are still folded from (seed, step), so
  the result is that of k calls of `train_step`.
  """
  def body(carry, batch):
    return train_step(statics, *carry, batch, device_data, hparams), None
  (state, sums), _ = jax.lax.scan(body, (state, sums), batches)
  return state, sums


def eval_step(statics: StepStatics, state: TrainState, batch,
              hparams: Hyperparams | None = None):
  """Masked sums of loss, top-1 and top-5 hits over one padded global batch."""
  hp = _as_arrays(statics.hyperparams if hparams is None else hparams)
  model = nnx.merge(statics.graphdef, state.params, state.batch_stats, copy=True)
  logits = model(model_input(statics, batch), train=False, dropout_rate=hp.dropout)
  mask = batch['mask']
  loss = _cross_entropy(logits, batch['label'], statics.num_classes, 0.0)
  top5 = jax.lax.top_k(logits, min(5, statics.num_classes))[1]
  return {'loss': jnp.sum(loss * mask),
          'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
          'correct_top5': jnp.sum(jnp.any(top5 == batch['label'][:, None], -1) * mask),
          'count': jnp.sum(mask)}
