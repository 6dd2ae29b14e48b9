"""The Bayes predictor of a finite task pool: dMMSE (Raventós et al. 2023, eq. 3).

With a prior uniform over the pool's M weights w_m and Gaussian noise σ, the posterior after
the pairs before position i weighs each pool task by its likelihood,
  p(m | x_<i, y_<i) ∝ exp(−Σ_{j<i} |y_j − x_j w_m|² / 2σ²),
and the prediction is the posterior mean Σ_m p(m | ·) x_i w_m. Without noise (σ = 0) the
likelihood keeps only the pool tasks that fit best (the σ → 0 limit: uniform over the
minimisers of the residual, every task before any example).
"""

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode
from metalearn.learners.base import Learner
from metalearn.learners.prefix_baseline import exclusive_cumsum, precise_einsum
from metalearn.learners.registry import LEARNERS

# Floats of the [prompts, M, P, O] products one compiled chunk holds (~64 MB in float32).
_CHUNK_FLOATS = 1 << 24


@runtime_checkable
class WeightPool(Protocol):
  """A finite prior over linear weights with Gaussian noise (tasks/pool.py's TaskPool)."""

  size: int
  noise_std: float
  is_linear: bool

  def pool_weights(self) -> jax.Array:
    """[M, D, O] the pool's weights."""


@LEARNERS.register("dmmse")
@dataclasses.dataclass(frozen=True)
class DiscreteMMSE(Learner):
  """The posterior mean over a pool's tasks; `pool` is the task pool it is the prior of."""

  pool: Any  # a WeightPool: the task it scores, a hashable frozen dataclass

  trainable = False

  def __post_init__(self):
    if not isinstance(self.pool, WeightPool) or not self.pool.is_linear:
      raise ValueError(f"baseline 'dmmse' needs a pool of linear tasks (task_pool with a "
                       f"linear_regression or sparse_linear_regression base); got "
                       f"{type(self.pool).__name__}")

  def init(self, rng, episode: Episode):
    return {}

  def state_floats(self, params, episode: Episode) -> int:
    """The log-likelihood so far of every pool task."""
    return self.pool.size

  def predict(self, params, episode: Episode) -> jax.Array:
    """[batch, points, out], prompts in chunks that bound the [M, P, O] products."""
    weights = self.pool.pool_weights()                       # [M, D, O]
    per_prompt = weights.shape[0] * episode.num_points * weights.shape[2]
    chunk = max(1, min(episode.batch_size, _CHUNK_FLOATS // per_prompt))
    return jax.lax.map(lambda xy: self._predict_prompt(weights, *xy), (episode.x, episode.y),
                       batch_size=chunk)

  def _predict_prompt(self, weights: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    fitted = precise_einsum("pd,mdo->mpo", x, weights)      # x_j w_m, [M, P, O]
    residual = jnp.sum(jnp.square(y[None] - fitted), axis=-1)        # [M, P]
    earlier = exclusive_cumsum(residual.T).T           # Σ over the pairs before each, [M, P]
    sigma = self.pool.noise_std
    if sigma > 0:
      log_post = -earlier / (2 * sigma**2)
    else:
      best = jnp.min(earlier, axis=0, keepdims=True)
      log_post = jnp.where(earlier <= best, 0.0, -jnp.inf)
    post = jax.nn.softmax(log_post, axis=0)                           # [M, P]
    return jnp.einsum("mp,mpo->po", post, fitted, precision=jax.lax.Precision.HIGHEST)
