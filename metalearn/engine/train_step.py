"""The one training step every learner shares, written once for both data-parallel paths
(`data_parallel`: pmap and jit over a mesh)."""

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.engine.experiment import Experiment, TrainConfig

@flax.struct.dataclass
class TrainState:
  step: jax.Array      # int32 scalar: steps taken so far
  params: Any          # the learner's meta-parameters
  opt_state: Any       # the optax state
  rng: jax.Array       # the run's root key (raw uint32[2]); step keys are fold_in(rng, step)

  @property
  def steps_taken(self) -> int:
    """The step count, on the host (a sweep's members, stacked, have all taken the same)."""
    return int(np.asarray(self.step).reshape(-1)[0])


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


def step_identity(experiment: Experiment) -> Experiment:
  """What `scanned_steps` is a function of: the experiment without its seeds, which only pick
  the initial state (`init_state`), so that runs of one config with other seeds share a step."""
  return dataclasses.replace(experiment, seed=0,
                             members=tuple(m._replace(seed=0) for m in experiment.members))


def init_state(experiment: Experiment) -> TrainState:
  """The state at step 0: params from the seed's init key, the optimizer's zero state; for a
  sweep, every member's state stacked on a leading axis (each from its own seed)."""
  # The seeds' keys are arguments, not constants, so that one program serves every seed
  # (PRNGKey on the host takes any int seed, as it would under jit).
  if experiment.members:
    roots = jnp.stack([jax.random.PRNGKey(member.seed) for member in experiment.members])
  else:
    roots = jax.random.PRNGKey(experiment.seed)
  return _init_from_roots(step_identity(experiment), roots)


@functools.partial(jax.jit, static_argnums=0)
def _init_from_roots(experiment: Experiment, roots: jax.Array) -> TrainState:
  if experiment.members:
    return jax.vmap(lambda root: _init_from_root(experiment, root))(roots)
  return _init_from_root(experiment, roots)


def _init_from_root(experiment: Experiment, root: jax.Array) -> TrainState:
  init_key, train_key = jax.random.split(root)
  example = experiment.task.sample(init_key, 1, experiment.points)
  params = experiment.learner.init(init_key, example)
  opt_state = make_optimizer(experiment.train).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    rng=train_key)


def abstract_state(experiment: Experiment) -> TrainState:
  """The train state's shapes, dtypes and placement (on this process's first device): all a
  restore needs.

  Traced with `jax.eval_shape`: `init_state` is neither compiled nor run.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                      jax.eval_shape(lambda: init_state(experiment)))


@dataclasses.dataclass(frozen=True)
class Shards:
  """How one step's global batch is split, for the step body that both paths share.

  `count`: the shards one call of the body sees apart (the pmapped devices; 1 under jit, whose
  body sees the global batch and lets XLA split it). `local`: this shard's rows of a global
  [batch, ...] array. `total`: a pytree summed over the shards (psum; the identity under jit).
  """
  count: int
  local: Callable[[jax.Array], jax.Array]
  total: Callable[[Any], Any]


def scanned_steps(experiment: Experiment, shards: Shards
                  ) -> Callable[[TrainState], tuple[TrainState, dict[str, jax.Array]]]:
  """The body of every training call: `steps_per_call` steps in one `lax.scan`.

  Each step draws the global batch from per-prompt keys of fold_in(rng, step), and a shard
  takes its rows of those keys, so that the same seed gives the same data on any number of
  devices and processes. The loss and metrics are sums over the global batch divided by its
  count of points, whatever the split: each shard's sums are totalled before dividing.

  A sweep (`experiment.members`) vmaps these steps over its members' stacked states: each
  member its own keys, its own pool size, its own optimizer (a global-norm clip included).
  """
  learner, train = experiment.learner, experiment.train
  optimizer = make_optimizer(train)
  counted = (jnp.arange(experiment.points) >= experiment.loss_from).astype(jnp.float32)

  def loss_fn(params, episode, mask, count):
    y_hat, surrogate = learner.training_terms(params, episode)
    per_point = experiment.task.loss(y_hat, episode.y)                  # [batch, points]
    sums = {"loss": jnp.sum(per_point * mask),
            "normalised_loss": jnp.sum(per_point / episode.zero_loss[:, None] * mask),
            **{name: jnp.sum(value * mask)
               for name, value in experiment.task.metrics(y_hat, episode.y).items()}}
    # A surrogate is a mean over this shard's prompts; the shards' equal shares make it the
    # global batch's mean once totalled.
    return sums["loss"] / count + surrogate / shards.count, sums

  def one_step(task, state: TrainState):
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), train.batch_size)
    active_dims, active_points = experiment.curriculum(state.step)
    episode = task.sample_keys(shards.local(keys), experiment.points, active_dims, active_points)
    mask = episode.mask * counted
    count = shards.total(jnp.sum(mask))
    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params, episode, mask, count)
    grads, sums = shards.total((grads, sums))
    metrics = {name: value / count for name, value in sums.items()}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def many_steps(state: TrainState, task=experiment.task):
    return jax.lax.scan(lambda s, _: one_step(task, s), state, None, length=train.steps_per_call)

  if not experiment.members:
    return many_steps
  sizes = [member.task_size for member in experiment.members]

  def member_steps(state: TrainState, size):
    task = experiment.task if size is None else experiment.task.with_size(size)
    return many_steps(state, task)

  def sweep_steps(states: TrainState):
    """Every member's steps in one vmapped scan; metrics [steps_per_call, members]."""
    if None in sizes:
      states, metrics = jax.vmap(lambda s: member_steps(s, None))(states)
    else:
      states, metrics = jax.vmap(member_steps)(states, jnp.asarray(sizes))
    return states, jax.tree.map(lambda m: jnp.swapaxes(m, 0, 1), metrics)

  return sweep_steps
