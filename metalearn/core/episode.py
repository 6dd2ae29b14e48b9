"""The episode: the one data structure every task produces and every learner consumes."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from metalearn.core.checks import check_int, check_number


@flax.struct.dataclass
class Episode:
  """A batch of in-context prompts, all of one fixed shape.

  Attributes:
    x: [batch, points, dim] inputs; coordinates past the active dimensions are zero.
    y: [batch, points, out] targets.
    mask: [batch, points] 1.0 for points that count (a curriculum or a shot count
      switches the rest off without changing the compiled shape), else 0.0.
    zero_loss: [batch] the expected loss of predicting zero for this episode's
      task distribution; dividing by it makes the zero predictor score 1.
    info: what the task knows about itself (for example its true weights `w`,
      [batch, dim, out]) for probing; learners never read it.
  """

  x: jax.Array
  y: jax.Array
  mask: jax.Array
  zero_loss: jax.Array
  info: dict[str, Any] = flax.struct.field(default_factory=dict)

  @property
  def batch_size(self) -> int:
    return self.x.shape[0]

  @property
  def num_points(self) -> int:
    return self.x.shape[1]

  @property
  def dim(self) -> int:
    return self.x.shape[2]

  def prefix(self, num_points: int) -> "Episode":
    """The first `num_points` points of every prompt (a smaller compiled shape)."""
    cut = lambda a: a[:, :num_points]
    return self.replace(x=cut(self.x), y=cut(self.y), mask=cut(self.mask))


def points_mask(num_points: int, active_points: jax.Array | int) -> jax.Array:
  """[num_points] float mask of the first `active_points` positions."""
  return (jnp.arange(num_points) < active_points).astype(jnp.float32)


def check_context_points(episode: Episode, context_points: Any) -> None:
  """Refuses a context size that leaves no query: the query is the point after the context."""
  points = episode.num_points
  try:
    check_int("context_points", context_points, 1)
    check_number("context_points", context_points, below=points)
  except ValueError:  # told as the one range [1, points - 1], with why
    raise ValueError(f"context_points must be an integer in [1, {points - 1}] for episodes of "
                     f"{points} points (the query is the point after the context), "
                     f"got {context_points!r}") from None
