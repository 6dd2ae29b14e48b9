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
                                                map_prompt_chunks, precise_einsum,
                                                prefix_grams)
from metalearn.learners.registry import LEARNERS


def _earlier(num_points: int) -> jax.Array:
  """[P, P] bool, True at [i, j] when j < i: the pairs prefix i may use."""
  return jnp.tril(jnp.ones((num_points, num_points), dtype=bool), k=-1)


# Prompts fitted together by least squares and ridge (zero prompts pad the last chunk: a zero
# input is no new direction and moves no fit), and stepped together by GD past one step.
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
    return map_prompt_chunks(lambda x, y: self._fit(x, y)[1], episode.x, episode.y,
                             _PROMPTS_PER_FIT)

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

  def predict(self, params, episode: Episode) -> jax.Array:
    """[batch, points, out]; past one step, chunks of prompts step together (`_steps`)."""
    if self.steps == 1:
      return super().predict(params, episode)
    return map_prompt_chunks(self._steps, episode.x, episode.y, _PROMPTS_PER_FIT)

  def predict_prompt(self, x, y):
    if self.steps > 1:
      return self._steps(x[None], y[None])[0]
    # One step: a_ij = (η/i)·y_j, so x_iᵀŵ = (η/i) Σ_{j<i} K_ij y_j.
    kernel = precise_einsum("pd,qd->pq", x, x)                              # [P, P]
    eta_over_k = self.step_size / jnp.maximum(example_counts(x.shape[0]), 1.0)[:, None]
    return precise_einsum("ij,jo->io", jnp.where(_earlier(x.shape[0]), kernel, 0.0)
                          * eta_over_k, y)

  def _steps(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """x [B, P, D], y [B, P, O] -> [B, P, O] after `steps` steps."""
    # ŵ stays in the span of the prefix's inputs, ŵ = X_kᵀa, so GD runs on the dual weights
    # a (one per earlier pair) with the kernel K = XXᵀ; row i of a is prefix i's, and
    # x_iᵀŵ = Σ_j K_ij a_ij. O(P²) memory instead of P Gram matrices of D².
    # The prompt axis is in every product and each output's rows are stacked, [B, O·P, P], so
    # a step is one product with one batch axis. Vmapped per prompt with the outputs as a
    # second batch axis, 5 steps took 28.3 ms instead of 15-18 (1,280 × 41 points, d = 20,
    # 2-core CPU).
    batch, points, out = y.shape
    kernel = precise_einsum("bpd,bqd->bpq", x, x)                           # [B, P, P]
    earlier = jnp.tile(_earlier(points), (out, 1))                          # [O·P, P]
    eta_over_k = jnp.tile(self.step_size / jnp.maximum(example_counts(points), 1.0)[:, None],
                          (out, 1))                                         # [O·P, 1]
    targets = jnp.repeat(jnp.swapaxes(y, 1, 2), points, axis=1)   # [B, O·P, P]: y_o in (o, i)
    a = jnp.where(earlier, targets, 0.0) * eta_over_k

    def step(a, _):
      fitted = precise_einsum("bim,bmj->bij", a, kernel)
      return a - eta_over_k * jnp.where(earlier, fitted - targets, 0.0), None

    a, _ = jax.lax.scan(step, a, None, length=self.steps - 1)
    predictions = jnp.sum(a * jnp.tile(kernel, (1, out, 1)), axis=-1)      # [B, O·P]
    return jnp.swapaxes(predictions.reshape(batch, out, points), 1, 2)
