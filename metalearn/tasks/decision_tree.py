"""Decision tree prompts on coordinate signs (Garg et al. 2022)."""

import dataclasses

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.tasks.base import TaskFamily
from metalearn.tasks.registry import TASKS


@TASKS.register("decision_tree")
@dataclasses.dataclass(frozen=True)
class DecisionTree(TaskFamily):
  """Garg et al. 2022's depth-4 decision trees, x ~ N(0, I).

  A full binary tree in heap order (node n has children 2n + 1 and 2n + 2):
  every internal node tests the sign of one coordinate drawn uniformly among the
  active ones (x > 0 goes right), every leaf holds a value ~ N(0, 1). y is the
  leaf a point reaches, so the zero predictor's expected loss is E[leaf²] = 1.
  """

  depth: int = 4  # number of tests on the path from the root to a leaf

  def __post_init__(self):
    super().__post_init__()
    checks.check_int("depth", self.depth, 1, name_kind=False)

  @property
  def num_internal(self) -> int:
    return 2**self.depth - 1

  def sample_one(self, rng, points, dim_mask):
    kx, kc, kl = jax.random.split(rng, 3)
    x = jax.random.normal(kx, (points, self.dim)) * dim_mask
    logits = jnp.where(dim_mask > 0, 0.0, -jnp.inf)
    coords = jax.random.categorical(kc, logits, shape=(self.num_internal,))  # [internal]
    leaves = jax.random.normal(kl, (self.num_internal + 1,))                  # [leaves]
    node = jnp.zeros((points,), jnp.int32)
    for _ in range(self.depth):  # static depth: unrolled
      go_right = x[jnp.arange(points), coords[node]] > 0
      node = 2 * node + 1 + go_right.astype(jnp.int32)
    y = leaves[node - self.num_internal][:, None]
    info = {"coords": coords.astype(jnp.int32), "leaves": leaves}
    return x, y, jnp.asarray(1.0, jnp.float32), info
