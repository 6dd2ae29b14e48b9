"""Algorithmic baselines: learners with no meta-parameters, every prefix at once.

Least squares, 3-nearest neighbours and averaging are Garg et al. 2022's
baselines; ridge with λ = σ²/τ² is Akyürek et al. 2022's Bayes-optimal
predictor; k steps of gradient descent from w = 0 is what von Oswald et al.
2022's GD-layer networks implement. Position i of `predict` uses the pairs
before it only, so each baseline solves P problems per prompt: all of them
together, from exclusive cumulative sums or prefix-masked designs.
"""

import dataclasses

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.learners.prefix_baseline import (PrefixBaseline, apply_weights, example_counts,
                                                precise_einsum, prefix_grams)
from metalearn.learners.registry import LEARNERS


def _earlier(num_points: int) -> jax.Array:
  """[P, P] bool, True at [i, j] when j < i: the pairs prefix i may use."""
  return jnp.tril(jnp.ones((num_points, num_points), dtype=bool), k=-1)


def _prefix_designs(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per prefix, the design [P, P, D] and targets [P, P, O] with later rows zeroed.

  A zero row adds nothing to a least-squares fit, so row i is prefix i's problem
  at one fixed shape.
  """
  keep = _earlier(x.shape[0])[:, :, None]
  return jnp.where(keep, x[None], 0.0), jnp.where(keep, y[None], 0.0)


@LEARNERS.register("least_squares")
@dataclasses.dataclass(frozen=True)
class LeastSquares(PrefixBaseline):
  """Minimum-norm least squares on each prefix, ŵ = X⁺y (Garg et al. 2022).

  Below D examples (or with zero-padded dimensions) the fit is underdetermined
  and the pseudo-inverse picks the smallest-norm interpolant. It is taken from an
  SVD of the design itself, not of XᵀX, so float32 keeps the condition number
  unsquared near k = D; singular values below `rtol`·σ_max count as zero.
  """

  rtol: float = 1e-5  # singular values below rtol·σ_max are treated as zero

  def __post_init__(self):
    checks.check_positive("least_squares rtol", self.rtol)

  def predict_prompt(self, x, y):
    design, targets = _prefix_designs(x, y)                  # [P, P, D], [P, P, O]
    u, s, vt = jnp.linalg.svd(design, full_matrices=False)   # [P, P, R], [P, R], [P, R, D]
    keep = s > self.rtol * s[:, :1]
    s_inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    w = precise_einsum("prd,pr,pqr,pqo->pdo", vt, s_inv, u, targets)
    return apply_weights(x, w)


@LEARNERS.register("ridge")
@dataclasses.dataclass(frozen=True)
class Ridge(PrefixBaseline):
  """Ridge regression on each prefix, ŵ = (XᵀX + λI)⁻¹Xᵀy.

  With λ = σ²/τ² it is the posterior mean under w ~ N(0, τ²I) and noise σ
  (Akyürek et al. 2022).
  """

  lam: float = 1.0  # λ, the L2 penalty on w

  def __post_init__(self):
    checks.check_positive("ridge lam", self.lam)

  def predict_prompt(self, x, y):
    gram, xty = prefix_grams(x, y)
    w = jnp.linalg.solve(gram + self.lam * jnp.eye(x.shape[1], dtype=x.dtype), xty)
    return apply_weights(x, w)


@LEARNERS.register("averaging")
@dataclasses.dataclass(frozen=True)
class Averaging(PrefixBaseline):
  """ŵ = (1/k) Σ_{j<k} y_j x_j, the average of the examples' x y (Garg et al. 2022)."""

  def predict_prompt(self, x, y):
    _, xty = prefix_grams(x, y)
    k = jnp.maximum(example_counts(x.shape[0]), 1.0)
    return apply_weights(x, xty / k[:, None, None])


@LEARNERS.register("knn")
@dataclasses.dataclass(frozen=True)
class NearestNeighbours(PrefixBaseline):
  """The mean y of the k nearest earlier x (Euclidean), or of all of them if fewer.

  Garg et al. 2022 use k = 3. Position 0 has no examples and predicts 0.
  """

  k: int = 3  # number of neighbours averaged

  def __post_init__(self):
    checks.check_int("knn k", self.k, 1)

  def predict_prompt(self, x, y):
    num_points = x.shape[0]
    dist2 = jnp.sum(jnp.square(x[:, None, :] - x[None, :, :]), axis=-1)   # [P, P]
    dist2 = jnp.where(_earlier(num_points), dist2, jnp.inf)
    neg_dist2, nearest = jax.lax.top_k(-dist2, min(self.k, num_points))   # [P, k]
    found = jnp.isfinite(neg_dist2)                      # fewer than k earlier points
    total = jnp.sum(jnp.where(found[:, :, None], y[nearest], 0.0), axis=1)
    return total / jnp.maximum(jnp.sum(found, axis=1), 1)[:, None]


@LEARNERS.register("gd")
@dataclasses.dataclass(frozen=True)
class GradientDescent(PrefixBaseline):
  """`steps` steps of gradient descent from w = 0 on L(w) = (1/2k) Σ_{j<k} (wᵀx_j − y_j)².

  The gradient (XᵀX w − Xᵀy)/k needs only the prefix Gram matrices, so every
  prefix steps together; one step gives ŵ = (η/k) Xᵀy, what one linear
  self-attention layer computes (von Oswald et al. 2022).
  """

  steps: int = 1           # gradient steps from w = 0
  step_size: float = 1.0   # η

  def __post_init__(self):
    checks.check_int("gd steps", self.steps, 1)
    checks.check_positive("gd step_size", self.step_size)

  def predict_prompt(self, x, y):
    gram, xty = prefix_grams(x, y)
    eta_over_k = self.step_size / jnp.maximum(example_counts(x.shape[0]), 1.0)[:, None, None]

    def step(w, _):
      return w - eta_over_k * (precise_einsum("pde,peo->pdo", gram, w) - xty), None

    w, _ = jax.lax.scan(step, jnp.zeros_like(xty), None, length=self.steps)
    return apply_weights(x, w)
