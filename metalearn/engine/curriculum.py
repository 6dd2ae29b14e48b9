"""Garg et al.'s curriculum: active dimensions and prompt length grow in steps.

It is a pure function of the training step, applied by masking inside fixed
shapes, so advancing it never recompiles and resuming needs no replay.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """Starts at (dims_start, points_start); every `interval` steps adds the increments,
  up to (dims_end, points_end), the task's dimension and the prompt length."""

  dims_start: int
  dims_end: int
  dims_increment: int
  points_start: int
  points_end: int
  points_increment: int
  interval: int

  def __post_init__(self):
    for name in ("dims", "points"):
      start, end = getattr(self, f"{name}_start"), getattr(self, f"{name}_end")
      if not 1 <= start <= end:
        raise ValueError(f"curriculum {name}_start={start} must be in [1, {end}] "
                         f"({end} is the task's {'dim' if name == 'dims' else 'data points'})")
      if getattr(self, f"{name}_increment") < 0:
        raise ValueError(f"curriculum {name}_increment must be >= 0, "
                         f"got {getattr(self, f'{name}_increment')}")
    if self.interval < 1:
      raise ValueError(f"curriculum interval must be >= 1, got {self.interval}")

  @classmethod
  def constant(cls, dims: int, points: int) -> "Curriculum":
    """No curriculum: all dimensions and points from the first step."""
    return cls(dims, dims, 0, points, points, 0, 1)

  def __call__(self, step: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """(active dims, active points) at `step`, as traced integers."""
    stage = jnp.asarray(step) // self.interval
    dims = jnp.minimum(self.dims_start + stage * self.dims_increment, self.dims_end)
    points = jnp.minimum(self.points_start + stage * self.points_increment, self.points_end)
    return dims, points
