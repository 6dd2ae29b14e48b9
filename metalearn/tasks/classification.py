"""Linear classification prompts with a logistic loss."""

import dataclasses
import math

import jax
import jax.numpy as jnp

from metalearn.tasks.base import ParametricTaskFamily
from metalearn.tasks.registry import TASKS


def _sign(z: jax.Array) -> jax.Array:
  """±1, with 0 mapped to +1."""
  return jnp.where(z >= 0, 1.0, -1.0)


@TASKS.register("linear_classification")
@dataclasses.dataclass(frozen=True)
class LinearClassification(ParametricTaskFamily):
  """y = sign(wᵀx) ∈ {−1, +1}, w ~ N(0, I) and x ~ N(0, I) over the active coordinates.

  Garg et al. 2022's noiseless linear functions with their outputs thresholded
  at zero, scored with the logistic loss softplus(−y·ŷ), so predicting 0 costs
  exactly log 2.
  """

  loss_name = "logistic"

  def draw_task(self, rng, dim_mask):
    kw = jax.random.split(rng)[1]
    return {"w": jax.random.normal(kw, (self.dim, 1)) * dim_mask[:, None]}

  def sample_for_task(self, rng, points, dim_mask, task):
    kx = jax.random.split(rng)[0]
    x = jax.random.normal(kx, (points, self.dim)) * dim_mask
    y = _sign(x @ task["w"])
    return x, y, jnp.asarray(math.log(2.0), jnp.float32), task

  def metrics(self, y_hat: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Per-point accuracy [batch, points]: 1.0 where sign(ŷ) equals the label."""
    return {"accuracy": jnp.mean((_sign(y_hat) == y).astype(jnp.float32), axis=-1)}
