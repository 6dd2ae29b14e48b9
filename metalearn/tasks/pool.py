"""A finite pool of M tasks (Raventós et al. 2023, "Pretraining task diversity and the emergence
of non-Bayesian in-context learning for regression").

Every prompt of the pool follows one of M tasks of a parametric family (its weights), drawn
once from the pool's own seed, apart from the data seed: the same pool under every run seed,
every data stream and every evaluation. Pool task m is a pure function of (seed, m), drawn from
`fold_in(seed key, m)`, so a prompt draws its index and then its task in the compiled step:
nothing to store, and nothing to send to the devices however large M is. The fresh tasks of
the base family ("latent") are the pool's counterpart at evaluation (`held_out_families`).

    task.name = "task_pool"; task.size = 64; task.seed = 0
    task.base = {"name": "linear_regression", "dim": 8, "noise_std": 0.5}
"""

import copy
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.tasks.base import ParametricTaskFamily, TaskFamily
from metalearn.tasks.linear import LinearRegression, SparseLinearRegression
from metalearn.tasks.registry import TASKS

# The families whose prompts are y = xw + σε, for which the pool is a prior over w that the
# dMMSE baseline reads (`pool_weights`).
_LINEAR_FAMILIES = (LinearRegression, SparseLinearRegression)


def _parametric_families() -> list[str]:
  return [name for name in TASKS.names if issubclass(TASKS.get(name), ParametricTaskFamily)]


@TASKS.register("task_pool")
@dataclasses.dataclass(frozen=True)
class TaskPool(TaskFamily):
  """Prompts on M tasks of `base`, each prompt's task drawn uniformly from the pool.

  `base` is a task section (a mapping with a 'name', as in a config) or a built family; it is
  built here and kept as a family, so the pool stays hashable (a static jit argument). Its
  `dim` is the pool's. The info of a prompt is its task's, plus "task_index".
  """

  dim: int = 0                        # the base family's (set from it)
  base: Any = None                    # a task section: {"name": ..., its fields}
  size: int = 1                       # M, the number of tasks in the pool
  seed: int = 0                       # draws the pool's tasks; independent of the run's seed

  def __post_init__(self):
    base = self.base
    if base is not None and not isinstance(base, TaskFamily):
      base = dict(base)  # a config section (a ConfigDict, or a dict after a JSON round trip)
      if base.get("name") == "task_pool":
        raise ValueError("task_pool base is itself a task_pool; allowed: a family with task "
                         f"parameters ({', '.join(_parametric_families())})")
      base = TASKS.build(base, path="task.base")
    if not isinstance(base, ParametricTaskFamily):
      raise ValueError(f"task_pool base must be a task family with task parameters (allowed: "
                       f"{', '.join(_parametric_families())}), got {self.base!r}")
    object.__setattr__(self, "base", base)
    if self.dim not in (0, base.dim):
      raise ValueError(f"task_pool dim={self.dim} differs from its base's dim={base.dim}; leave "
                       "it unset (0) or equal")
    object.__setattr__(self, "dim", base.dim)
    super().__post_init__()
    checks.check_int("task_pool size", self.size, 1)
    checks.check_int("task_pool seed", self.seed, 0)

  @property
  def out_dim(self) -> int:
    return self.base.out_dim

  @property
  def loss_name(self) -> str:
    return self.base.loss_name

  def check_points(self, points: int) -> None:
    self.base.check_points(points)

  def held_out_families(self) -> dict[str, TaskFamily]:
    """Pool tasks ("pretrain") beside fresh tasks of the base family ("latent")."""
    return {"pretrain": self, "latent": self.base}

  def task_key(self, index: jax.Array) -> jax.Array:
    """The key pool task `index` is drawn from."""
    return jax.random.fold_in(jax.random.PRNGKey(self.seed), index)

  def pool_tasks(self, dim_mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """All M tasks, each parameter stacked [M, ...] (a dMMSE prior, a test)."""
    dim_mask = jnp.ones((self.dim,)) if dim_mask is None else dim_mask
    keys = jax.vmap(self.task_key)(jnp.arange(self.size))
    return jax.vmap(lambda key: self.base.draw_task(key, dim_mask))(keys)

  def with_size(self, size: int | jax.Array) -> "TaskPool":
    """The pool of this one's first `size` tasks: task m depends on (seed, m) alone, so the
    first M tasks of any pool are the pool of size M. A traced `size` (the members of a sweep,
    each drawing from its own prefix of one pool inside one vmapped step) makes a copy that
    only samples: it is neither checked nor hashed."""
    if isinstance(size, int):
      return dataclasses.replace(self, size=size)
    pool = copy.copy(self)
    object.__setattr__(pool, "size", size)
    return pool

  def sample_one(self, rng, points, dim_mask):
    k_index, k_points = jax.random.split(rng)
    index = jax.random.randint(k_index, (), 0, self.size)
    task = self.base.draw_task(self.task_key(index), dim_mask)
    x, y, zero_loss, info = self.base.sample_for_task(k_points, points, dim_mask, task)
    return x, y, zero_loss, {**info, "task_index": index}

  # The prior the dMMSE baseline needs (learners/dmmse.py's WeightPool).

  @property
  def is_linear(self) -> bool:
    """Whether prompts are y = xw + σε (a linear base), so that `pool_weights` is a prior."""
    return isinstance(self.base, _LINEAR_FAMILIES)

  @property
  def noise_std(self) -> float:
    return self.base.noise_std

  @property
  def ridge_lambda(self) -> float:
    """The base's λ = σ²/τ²: ridge is the Bayes predictor of fresh tasks (the pool's latent
    prior), the 'bayes_ridge' baseline beside dMMSE. An AttributeError for a base without it."""
    return self.base.ridge_lambda

  def pool_weights(self) -> jax.Array:
    """[M, dim, out] the pool's weights w_m, all dimensions active."""
    if not self.is_linear:
      raise ValueError(f"a pool of {type(self.base).__name__} has no linear weights; "
                       "allowed: a pool of linear_regression or sparse_linear_regression")
    return self.pool_tasks()["w"]
