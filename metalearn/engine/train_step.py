"""The one training step every learner shares, scanned and mapped over devices."""

import functools
from typing import Any, Callable

import flax.struct
import jax
import numpy as np
import jax.numpy as jnp
import optax

from metalearn.engine.experiment import Experiment, TrainConfig

AXIS = "devices"


@flax.struct.dataclass
class TrainState:
  step: jax.Array      # int32 scalar: steps taken so far
  params: Any          # the learner's meta-parameters
  opt_state: Any       # the optax state
  rng: jax.Array       # the run's root key (raw uint32[2]); step keys are fold_in(rng, step)


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
  """Adam/AdamW/SGD with a constant or warm-up-then-cosine learning rate (Akyürek et al.)."""
  if train.schedule == "constant":
    learning_rate = train.learning_rate
  else:
    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0, train.learning_rate, train.warmup_steps, max(train.num_steps, train.warmup_steps + 1))
  if train.optimizer == "adam":
    optimizer = optax.adam(learning_rate)
  elif train.optimizer == "adamw":
    optimizer = optax.adamw(learning_rate, weight_decay=train.weight_decay)
  else:
    optimizer = optax.sgd(learning_rate)
  # Chained whether or not it clips, so that the state keeps one structure and a run
  # can resume with clipping turned on (the advice when a loss blows up).
  clip = optax.clip_by_global_norm(train.grad_clip) if train.grad_clip > 0 else optax.identity()
  return optax.chain(clip, optimizer)


@functools.partial(jax.jit, static_argnums=0)
def init_state(experiment: Experiment) -> TrainState:
  """The state at step 0: params from the seed's init key, the optimizer's zero state."""
  root = jax.random.PRNGKey(experiment.seed)
  init_key, train_key = jax.random.split(root)
  example = experiment.task.sample(init_key, 1, experiment.points)
  params = experiment.learner.init(init_key, example)
  opt_state = make_optimizer(experiment.train).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    rng=train_key)


def abstract_state(experiment: Experiment) -> TrainState:
  """The train state's shapes, dtypes and placement (on the first device): all a restore needs.

  Traced with `jax.eval_shape`: `init_state` is neither compiled nor run.
  """
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                      jax.eval_shape(lambda: init_state(experiment)))


def make_train_step(experiment: Experiment, num_devices: int
                    ) -> Callable[[TrainState], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns the pmapped function that takes `steps_per_call` training steps.

  Its input and output states are replicated over `num_devices` devices
  (leading axis); its metrics are [devices, steps_per_call] per name (identical
  across devices). Every step draws the global batch from per-prompt keys of
  fold_in(rng, step), and each device takes its slice of those keys, so the same
  seed gives the same data on any number of devices.
  """
  task, learner, train = experiment.task, experiment.learner, experiment.train
  optimizer = make_optimizer(train)
  local_batch = train.batch_size // num_devices

  counted = (jnp.arange(experiment.points) >= experiment.loss_from).astype(jnp.float32)

  def loss_fn(params, episode):
    y_hat, surrogate = learner.training_terms(params, episode)
    per_point = task.loss(y_hat, episode.y)                              # [batch, points]
    mask = episode.mask * counted
    count = jnp.sum(mask)
    loss = jnp.sum(per_point * mask) / count
    normalised = jnp.sum(per_point / episode.zero_loss[:, None] * mask) / count
    extra = {name: jnp.sum(value * mask) / count
             for name, value in task.metrics(y_hat, episode.y).items()}
    return loss + surrogate, {"loss": loss, "normalised_loss": normalised, **extra}

  def one_step(state: TrainState, _):
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), train.batch_size)
    local_keys = jax.lax.dynamic_slice_in_dim(keys, jax.lax.axis_index(AXIS) * local_batch,
                                              local_batch)
    active_dims, active_points = experiment.curriculum(state.step)
    episode = task.sample_keys(local_keys, experiment.points, active_dims, active_points)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, episode)
    grads, metrics = jax.lax.pmean((grads, metrics), AXIS)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def many_steps(state: TrainState):
    return jax.lax.scan(one_step, state, None, length=train.steps_per_call)

  devices = jax.local_devices()[:num_devices]
  stepped = jax.pmap(many_steps, axis_name=AXIS, devices=devices, donate_argnums=0)
  if num_devices == 1 or devices[0].platform != "cpu":
    return stepped
  return functools.partial(_one_call_in_flight, stepped)


def _one_call_in_flight(stepped: Callable[[TrainState], Any], state: TrainState) -> Any:
  """Runs a multi-device CPU step and waits for it before the next can be dispatched.

  XLA's CPU client deadlocks when calls with collectives are dispatched ahead: a launch of one
  device's share waits for a free slot of that device's in-flight limit while holding a worker
  thread, and the other device's share, already running, waits in the all-reduce for it until
  XLA aborts the process (exit 134, "Termination timeout for 'all reduce ...'"; seen with gdb,
  jaxlib 0.10.2, 2 host devices on 2 cores). One call in flight never needs a second slot. Each
  call runs `steps_per_call` steps, so the host wait costs one dispatch per call.
  """
  return jax.block_until_ready(stepped(state))


def replicate(tree: Any, num_devices: int) -> Any:
  """Copies a pytree onto the first `num_devices` local devices (leading axis).

  The copies are laid out exactly as the train step's outputs are, so feeding
  its own output back in never recompiles it.
  """
  stacked = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (num_devices,) + np.shape(a)), tree)
  return jax.pmap(lambda t: t, axis_name=AXIS, devices=jax.local_devices()[:num_devices])(stacked)


def unreplicate(tree: Any) -> Any:
  """The first device's copy of a replicated pytree."""
  return jax.tree.map(lambda a: np.asarray(a[0]), tree)
