"""Algorithmic baselines: learners with no meta-parameters, every prefix at once.

Least squares, 3-nearest neighbours and averaging are Garg et al. 2022's
baselines; ridge with λ = σ²/τ² is Akyürek et al. 2022's Bayes-optimal
predictor; k steps of gradient descent from w = 0 is what von Oswald et al.
2022's GD-layer networks implement. Position i of `predict` uses the pairs
before it only, so each baseline solves P problems per prompt: all of them
together, from exclusive cumulative sums, one fit updated point by point
(least squares, ridge) or dual weights on the prompt's kernel (GD).
"""

import dataclasses

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners import updated_factor
from metalearn.learners.prefix_baseline import (PrefixBaseline, apply_weights, example_counts,
                                                precise_einsum, prefix_grams)
from metalearn.learners.registry import LEARNERS


def _earlier(num_points: int) -> jax.Array:
  """[P, P] bool, True at [i, j] when j < i: the pairs prefix i may use."""
  return jnp.tril(jnp.ones((num_points, num_points), dtype=bool), k=-1)


# Prompts fitted together by least squares and ridge (zero prompts pad the last chunk: a zero
# input is no new direction and moves no fit).
_PROMPTS_PER_FIT = 128


class _UpdatedFit(PrefixBaseline):
  """Least squares or ridge: one fit per prompt updated point by point (updated_factor.py),
  which also predicts any number of queries from a context it has fitted once. `predict`
  fits whole chunks of prompts, so there is no per-prompt `predict_prompt`."""

  def solver(self) -> tuple[float | None, float]:
    """(the ridge penalty λ, or None for least squares; the new-direction tolerance)."""
    raise NotImplementedError

  def _fit(self, x: jax.Array, y: jax.Array) -> tuple[updated_factor.Fit, jax.Array]:
    penalty, rtol = self.solver()
    start = updated_factor.start_for(x, y, penalty)
    return updated_factor.fit_pairs(start, x, y, rtol, explore=penalty is None)

  def predict(self, params, episode: Episode) -> jax.Array:
    """[batch, points, out], in chunks of prompts whose fits stay in cache (128: ~25% faster
    than 1,280 at once on a 2-core CPU), each chunk its own batched scan (not a vmap, which
    would turn the scan's switch to the cheaper step into computing both)."""
    batch = episode.batch_size
    if batch <= _PROMPTS_PER_FIT:
      return self._fit(episode.x, episode.y)[1]
    chunks = -(-batch // _PROMPTS_PER_FIT)
    split = lambda a: jnp.pad(a, [(0, chunks * _PROMPTS_PER_FIT - batch)] + [(0, 0)] * (
        a.ndim - 1)).reshape((chunks, _PROMPTS_PER_FIT) + a.shape[1:])
    out = jax.lax.map(lambda xy: self._fit(*xy)[1], (split(episode.x), split(episode.y)))
    return out.reshape((-1,) + out.shape[2:])[:batch]

  def predict_queries(self, params, context: Episode, query_x: jax.Array) -> jax.Array:
    """[B, M, O]: query_x [B, M, D] through the weights fitted to all of context's pairs."""
    weights = self._fit(context.x, context.y)[0].weights
    return precise_einsum("bmd,bdo->bmo", query_x, weights)


@LEARNERS.register("least_squares")
@dataclasses.dataclass(frozen=True)
class LeastSquares(_UpdatedFit):
  """Minimum-norm least squares on each prefix, ŵ = X⁺y (Garg et al. 2022).

  Below D examples (or with zero-padded dimensions) the fit is underdetermined and the
  pseudo-inverse picks the smallest-norm interpolant. An input whose component outside the
  span of the earlier ones is below `rtol`·|x| counts as inside it.
  """

  rtol: float = 1e-5  # relative size below which an input's new direction counts as none

  def __post_init__(self):
    checks.check_positive("least_squares rtol", self.rtol)

  def solver(self):
    return None, self.rtol


@LEARNERS.register("ridge")
@dataclasses.dataclass(frozen=True)
class Ridge(_UpdatedFit):
  """Ridge regression on each prefix, ŵ = (XᵀX + λI)⁻¹Xᵀy.

  With λ = σ²/τ² it is the posterior mean under w ~ N(0, τ²I) and noise σ
  (Akyürek et al. 2022).
  """

  lam: float = 1.0  # λ, the L2 penalty on w

  def __post_init__(self):
    checks.check_positive("ridge lam", self.lam)

  def solver(self):
    return self.lam, 0.0  # every direction is explored from the start: no tolerance


@LEARNERS.register("averaging")
@dataclasses.dataclass(frozen=True)
class Averaging(PrefixBaseline):
  """ŵ = (1/k) Σ_{j<k} y_j x_j, the average of the examples' x y (Garg et al. 2022)."""

  def state_floats(self, params, episode: Episode) -> int:
    return episode.dim * episode.y.shape[-1]  # Σ y_j x_j (the count is the position)

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

  def state_floats(self, params, episode: Episode) -> int:
    return episode.num_points * (episode.dim + episode.y.shape[-1])  # every pair, kept

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

  From w = 0 the iterates stay in the span of the prefix's inputs, so every prefix
  steps together on dual weights over the prompt's kernel XXᵀ; one step gives
  ŵ = (η/k) Xᵀy, what one linear self-attention layer computes (von Oswald et al. 2022).
  """

  steps: int = 1           # gradient steps from w = 0
  step_size: float = 1.0   # η

  def __post_init__(self):
    checks.check_int("gd steps", self.steps, 1)
    checks.check_positive("gd step_size", self.step_size)

  def predict_prompt(self, x, y):
    # ŵ stays in the span of the prefix's inputs, ŵ = X_kᵀa, so GD runs on the dual weights
    # a (one per earlier pair) with the kernel K = XXᵀ; row i of a is prefix i's, and
    # x_iᵀŵ = Σ_j K_ij a_ij. O(P²) memory instead of P Gram matrices of D².
    kernel = precise_einsum("pd,qd->pq", x, x)                              # [P, P]
    earlier = _earlier(x.shape[0])
    eta_over_k = self.step_size / jnp.maximum(example_counts(x.shape[0]), 1.0)[:, None]
    if self.steps == 1:                                    # a_ij = (η/i)·y_j
      return precise_einsum("ij,jo->io", jnp.where(earlier, kernel, 0.0) * eta_over_k, y)
    targets = y.T[:, None, :]                              # [O, 1, P]: outputs lead, so that
    a = jnp.where(earlier, targets, 0.0) * eta_over_k      # each step is O kernel products

    def step(a, _):
      fitted = precise_einsum("oim,mj->oij", a, kernel)
      return a - eta_over_k * jnp.where(earlier, fitted - targets, 0.0), None

    a, _ = jax.lax.scan(step, a, None, length=self.steps - 1)
    return jnp.sum(a * kernel, axis=-1).T
