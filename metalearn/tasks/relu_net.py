"""Two-layer ReLU network prompts (Garg et al. 2022)."""

import dataclasses

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.tasks.base import ParametricTaskFamily
from metalearn.tasks.registry import TASKS


@TASKS.register("relu_net_regression")
@dataclasses.dataclass(frozen=True)
class ReluNetRegression(ParametricTaskFamily):
  """Garg et al. 2022's two-layer ReLU networks: y = Σ_j a_j relu(w_jᵀx).

  r = `hidden` units, w_j ~ N(0, I) over the active coordinates, a_j ~ N(0, 2/r),
  x ~ N(0, I). The zero predictor's expected loss is
  E[y²] = Σ_j E[a_j²]·E[relu(w_jᵀx)²] = r·(2/r)·(|active|/2) = |active|,
  because the a_j are independent with mean zero and w_jᵀx ~ N(0, |active|).
  """

  hidden: int = 100  # r, the number of hidden units

  def __post_init__(self):
    super().__post_init__()
    checks.check_int("hidden", self.hidden, 1, name_kind=False)

  def draw_task(self, rng, dim_mask):
    _, k1, k2 = jax.random.split(rng, 3)
    return {"w1": jax.random.normal(k1, (self.dim, self.hidden)) * dim_mask[:, None],
            "w2": jnp.sqrt(2.0 / self.hidden) * jax.random.normal(k2, (self.hidden, 1))}

  def sample_for_task(self, rng, points, dim_mask, task):
    kx = jax.random.split(rng, 3)[0]
    x = jax.random.normal(kx, (points, self.dim)) * dim_mask
    y = jax.nn.relu(x @ task["w1"]) @ task["w2"]
    return x, y, jnp.sum(dim_mask), task
