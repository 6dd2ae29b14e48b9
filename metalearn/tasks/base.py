"""What every task family shares: per-example sampling, masks, and the loss; and what a family
whose prompts each follow one drawn task (its weights) adds, so that a pool can hold tasks."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from metalearn.core import checks, losses
from metalearn.core.episode import Episode, points_mask


@dataclasses.dataclass(frozen=True)
class TaskFamily:
  """A distribution over tasks; `sample` draws a batch of prompts on the device.

  Subclasses implement `sample_one`. Every prompt is drawn from its own key split
  off the batch key, so the same key gives the same global batch however it is
  later sharded over devices.
  """

  dim: int

  # Width of y. Subclasses with a different output width override it.
  out_dim = 1
  # The per-point loss (a name in metalearn.core.losses) that scores predictions.
  loss_name = "squared_error"
  # None, or the size of the support set every episode opens with (few-shot episodes):
  # evaluation then scores each query from that support set alone.
  context_points = None

  def __post_init__(self):
    checks.check_int("task dim", self.dim, 1, name_kind=False)

  def check_points(self, points: int) -> None:
    """Raises a clear error, before anything compiles, for a prompt length it cannot make."""

  def held_out_families(self) -> dict[str, "TaskFamily"]:
    """The families a run's held-out prompts come from, by name ("": the family itself); a task
    pool scores its own tasks beside fresh ones (tasks/pool.py)."""
    return {"": self}

  def sample_one(self, rng: jax.Array, points: int, dim_mask: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """One prompt: x [points, dim] (zero where dim_mask is 0), y [points, out_dim],
    the zero predictor's expected loss (a scalar) and the task's info."""
    raise NotImplementedError

  def sample(self, rng: jax.Array, batch: int, points: int,
             active_dims: jax.Array | int | None = None,
             active_points: jax.Array | int | None = None) -> Episode:
    """`batch` prompts of `points` points; `active_*` may be traced values."""
    return self.sample_keys(jax.random.split(rng, batch), points, active_dims, active_points)

  def sample_keys(self, keys: jax.Array, points: int,
                  active_dims: jax.Array | int | None = None,
                  active_points: jax.Array | int | None = None) -> Episode:
    """One prompt per key in `keys` [batch, 2]."""
    active_dims = self.dim if active_dims is None else active_dims
    active_points = points if active_points is None else active_points
    dim_mask = points_mask(self.dim, active_dims)
    x, y, zero_loss, info = jax.vmap(
        lambda k: self.sample_one(k, points, dim_mask))(keys)
    mask = jnp.broadcast_to(points_mask(points, active_points), x.shape[:2])
    return Episode(x=x, y=y, mask=mask, zero_loss=zero_loss, info=info)

  def loss(self, y_hat: jax.Array, y: jax.Array) -> jax.Array:
    """Per-point loss [batch, points], the one `loss_name` names."""
    return losses.get(self.loss_name)(y_hat, y)

  def metrics(self, y_hat: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Extra per-point metrics [batch, points] reported beside the loss."""
    return {}


class ParametricTaskFamily(TaskFamily):
  """A family whose prompt is one task (its parameters: weights, an amplitude) and points from it.

  `draw_task` and `sample_for_task` both take the prompt's key and use their own parts of the
  split the family always made, so `sample_one` draws exactly what it drew before the two were
  separated; a task pool (tasks/pool.py) passes a pool task's key to `draw_task` instead.
  """

  def draw_task(self, rng: jax.Array, dim_mask: jax.Array) -> dict[str, jax.Array]:
    """The task of the prompt whose key is `rng`: its parameters, the prompt's info."""
    raise NotImplementedError

  def sample_for_task(self, rng: jax.Array, points: int, dim_mask: jax.Array,
                      task: dict[str, jax.Array]
                      ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """The prompt of key `rng` on `task`: x, y, the zero predictor's loss and the info."""
    raise NotImplementedError

  def sample_one(self, rng, points, dim_mask):
    return self.sample_for_task(rng, points, dim_mask, self.draw_task(rng, dim_mask))
