"""Sinusoid regression prompts (Finn et al. 2017, MAML)."""

import dataclasses
import math

import jax
import jax.numpy as jnp

from metalearn.tasks.base import ParametricTaskFamily
from metalearn.tasks.registry import TASKS


def _uniform_cos_sin_2(low: float, high: float) -> tuple[float, float]:
  """(E[cos 2u], E[sin 2u]) for u ~ U[low, high]."""
  if high == low:
    return math.cos(2 * low), math.sin(2 * low)
  width = 2 * (high - low)
  return ((math.sin(2 * high) - math.sin(2 * low)) / width,
          (math.cos(2 * low) - math.cos(2 * high)) / width)


@TASKS.register("sinusoid")
@dataclasses.dataclass(frozen=True)
class Sinusoid(ParametricTaskFamily):
  """Finn et al. 2017's sinusoids: y = A sin(x − φ).

  A ~ U[0.1, 5], φ ~ U[0, π] and x ~ U[−5, 5] by default (the MAML setting).

  The zero predictor's expected loss is E[A²]·E[sin²(x − φ)], computed exactly
  from the ranges; with a phase range of length π it is E[A²]/2.
  """

  dim: int = 1                 # input width; a sinusoid has one input
  amplitude_min: float = 0.1   # lower end of A's uniform range
  amplitude_max: float = 5.0   # upper end of A's uniform range
  phase_min: float = 0.0       # lower end of φ's uniform range
  phase_max: float = math.pi   # upper end of φ's uniform range
  x_min: float = -5.0          # lower end of x's uniform range
  x_max: float = 5.0           # upper end of x's uniform range

  def __post_init__(self):
    super().__post_init__()
    if self.dim != 1:
      raise ValueError(f"sinusoid dim must be 1, got {self.dim}")
    if not 0 <= self.amplitude_min <= self.amplitude_max:
      raise ValueError("need 0 <= amplitude_min <= amplitude_max, got "
                       f"[{self.amplitude_min}, {self.amplitude_max}]")
    if self.phase_min > self.phase_max:
      raise ValueError(
          f"need phase_min <= phase_max, got [{self.phase_min}, {self.phase_max}]")
    if self.x_min >= self.x_max:
      raise ValueError(f"need x_min < x_max, got [{self.x_min}, {self.x_max}]")

  @property
  def zero_loss(self) -> float:
    a, b = self.amplitude_min, self.amplitude_max
    mean_a2 = (a * a + a * b + b * b) / 3
    # sin²(x − φ) = (1 − cos 2x cos 2φ − sin 2x sin 2φ)/2, x and φ independent.
    cx, sx = _uniform_cos_sin_2(self.x_min, self.x_max)
    cp, sp = _uniform_cos_sin_2(self.phase_min, self.phase_max)
    return mean_a2 * (1 - cx * cp - sx * sp) / 2

  def draw_task(self, rng, dim_mask):
    _, ka, kp = jax.random.split(rng, 3)
    return {"amplitude": jax.random.uniform(ka, (), minval=self.amplitude_min,
                                            maxval=self.amplitude_max),
            "phase": jax.random.uniform(kp, (), minval=self.phase_min, maxval=self.phase_max)}

  def sample_for_task(self, rng, points, dim_mask, task):
    kx = jax.random.split(rng, 3)[0]
    x = jax.random.uniform(kx, (points, 1), minval=self.x_min, maxval=self.x_max) * dim_mask
    y = task["amplitude"] * jnp.sin(x - task["phase"])
    zero_loss = jnp.asarray(self.zero_loss, jnp.float32)
    return x, y, zero_loss, task
