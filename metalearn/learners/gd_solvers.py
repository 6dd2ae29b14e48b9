"""The algorithmic counterparts of GD-layer networks (von Oswald et al. 2022), and their tuning.

Every solver here starts from w = 0 on a prefix's k pairs and only ever multiplies by
S = XᵀX/k, so its weights are ŵ = c(S)·b with b = Xᵀy/k and c a scalar function of S's
eigenvalues (a spectral filter; c(λ) = 1/λ is least squares):

- K GD steps on (1/2k) Σ (wᵀx_j − y_j)² with step η, the `gd` baseline (baselines.py):
  c ← c + η(1 − λc); one step gives ŵ = η·b = (η/k)·Xᵀy.
- GD++ (von Oswald et al., Sec. 3): each step is a GD step on the current residuals, then every
  x (context and query) maps x ← (I − γ S_t) x, S_t the current inputs' XᵀX/k. After t steps
  the inputs are A_t x with A_t a function of S, so with a = A_t's eigenvalue:
  c ← c + η a²(1 − λc), a ← (1 − γ a² λ) a  (`gd_plus_plus_filter` derives it).
- Preconditioned GD with the fixed preconditioner (S + εI)⁻¹: w ← w + η(S + εI)⁻¹(b − S w),
  c ← c + η(1 − λc)/(λ + ε). With η = 1 one step is ridge with λ_ridge = kε, and K steps
  are iterated ridge, which tends to the minimum-norm least-squares solution.
- Newton–Schulz for S⁻¹: M ← M(2I − S M) from the scaled identity M₀ = I/‖S‖_F (‖S‖_F ≥ λ_max,
  so each eigenvalue's error 1 − λm starts in [0, 1) and squares every step), ŵ = M_K·b:
  m ← m(2 − λm); quadratic convergence to least squares for k ≥ D.

The learners (`predict`, every prefix at once) iterate the D×D matrices as written above;
`tune_gd` and `tune_gd_plus_plus` use the filters instead: they diagonalise each held-out
task's S once, and a grid search, refined over a few rounds, then scores every (η, γ) of a
round in one vmapped call at O(tasks·D) per value, minimising the squared error at a given
number of context points. A test holds the filters equal to the matrix iterations.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners.prefix_baseline import (PrefixBaseline, apply_weights, example_counts,
                                                precise_einsum, prefix_grams)
from metalearn.learners.registry import LEARNERS


def gd_filter(lam: jax.Array, step_size, steps: int) -> jax.Array:
  """c_K(λ) of K GD steps from w = 0 (η may be traced): c ← c + η(1 − λc)."""
  def step(c, _):
    return c + step_size * (1 - lam * c), None
  return jax.lax.scan(step, jnp.zeros_like(lam), None, length=steps)[0]


def gd_plus_plus_filter(lam: jax.Array, step_size, gamma, steps: int) -> jax.Array:
  """c_K(λ) of K GD++ steps (η, γ may be traced).

  With inputs A_t x and residuals y − X u_t (u_t the weights the query sees, ŷ = x_qᵀu_t), a
  GD step on the current data is Δw = η A_t(b − S u_t); it moves the query's prediction by
  (A_t x_q)ᵀΔw, so u ← u + η A_tᵀA_t(b − S u). The x map multiplies A by (I − γ A S Aᵀ).
  A and u stay functions of S; per eigenvalue, a and c.
  """
  def step(carry, _):
    c, a = carry
    return (c + step_size * a * a * (1 - lam * c), (1 - gamma * a * a * lam) * a), None
  return jax.lax.scan(step, (jnp.zeros_like(lam), jnp.ones_like(lam)), None, length=steps)[0][0]


def preconditioned_gd_filter(lam: jax.Array, step_size, steps: int, damping) -> jax.Array:
  """c_K(λ) of K steps w ← w + η(S + εI)⁻¹(b − S w) from w = 0."""
  def step(c, _):
    return c + step_size * (1 - lam * c) / (lam + damping), None
  return jax.lax.scan(step, jnp.zeros_like(lam), None, length=steps)[0]


def newton_schulz_filter(lam: jax.Array, steps: int) -> jax.Array:
  """m_K(λ) of K Newton–Schulz steps M ← M(2I − S M) from M₀ = I/‖S‖_F (lam [..., D]).

  Below D pairs S is singular: M's value on its null space doubles each step, but b has no
  component there (up to rounding), so ŵ stays the minimum-norm solution while 2^K·ε_float ≪ 1
  (K ≲ 20 in float32).
  """
  norm = jnp.sqrt(jnp.sum(jnp.square(lam), axis=-1, keepdims=True))
  start = jnp.broadcast_to(1.0 / jnp.where(norm > 0, norm, 1.0), lam.shape)  # S = 0: b = 0 too

  def step(m, _):
    return m * (2 - lam * m), None
  return jax.lax.scan(step, start, None, length=steps)[0]


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  return precise_einsum("...de,...ef->...df", a, b)


def gd_plus_plus_weights(gram: jax.Array, xty: jax.Array, step_size: float, gamma: float,
                         steps: int) -> jax.Array:
  """u_K [..., D, O] of K GD++ steps, as matrices: ŷ = x_qᵀu (see `gd_plus_plus_filter`).

  u ← u + η AᵀA(b − S u), A ← (I − γ A S Aᵀ)A from u = 0, A = I; gram = S, xty = b.
  """
  def step(carry, _):
    u, a = carry
    u = u + step_size * _matmul(precise_einsum("...fd,...fe->...de", a, a), xty - _matmul(gram, u))
    return (u, a - gamma * _matmul(precise_einsum("...de,...ef,...gf->...dg", a, gram, a), a)), None

  eye = jnp.broadcast_to(jnp.eye(gram.shape[-1], dtype=gram.dtype), gram.shape)
  return jax.lax.scan(step, (jnp.zeros_like(xty), eye), None, length=steps)[0][0]


def preconditioned_gd_weights(gram: jax.Array, xty: jax.Array, step_size: float, steps: int,
                              damping: float) -> jax.Array:
  """w_K of K steps w ← w + η(S + εI)⁻¹(b − S w) from w = 0, as matrices."""
  precondition = jnp.linalg.inv(gram + damping * jnp.eye(gram.shape[-1], dtype=gram.dtype))

  def step(w, _):
    return w + step_size * _matmul(precondition, xty - _matmul(gram, w)), None
  return jax.lax.scan(step, jnp.zeros_like(xty), None, length=steps)[0]


def newton_schulz_weights(gram: jax.Array, xty: jax.Array, steps: int) -> jax.Array:
  """M_K·b with M ← M(2I − S M) from M₀ = I/‖S‖_F, as matrices (see `newton_schulz_filter`)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(gram), axis=(-2, -1), keepdims=True))
  eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)

  def step(m, _):
    return _matmul(m, 2 * eye - _matmul(gram, m)), None
  m = jax.lax.scan(step, eye / jnp.where(norm > 0, norm, 1.0), None, length=steps)[0]
  return _matmul(m, xty)


class _Solver(PrefixBaseline):
  """ŵ = weights(S, b) on every prefix; subclasses give `weights(S [P, D, D], b [P, D, O])`.

  The learners iterate the matrices themselves (not S's eigenvectors), so that
  gradients, such as the sensitivities of metalearn/analysis/similarity.py, never pass through
  an eigendecomposition of a singular or degenerate S.
  """

  def weights(self, gram: jax.Array, xty: jax.Array) -> jax.Array:
    raise NotImplementedError

  def predict_prompt(self, x, y):
    gram, xty = prefix_grams(x, y)
    k = jnp.maximum(example_counts(x.shape[0]), 1.0)[:, None, None]
    return apply_weights(x, self.weights(gram / k, xty / k))


@LEARNERS.register("gd_plus_plus")
@dataclasses.dataclass(frozen=True)
class GDPlusPlus(_Solver):
  """K GD++ steps (von Oswald et al. 2022): GD on the residuals, then x ← (I − γS)x; γ = 0 is GD."""

  steps: int = 1           # GD++ steps (layers of the recurrent construction)
  step_size: float = 1.0   # η
  gamma: float = 0.0       # γ of the x map; 0 gives plain GD

  def __post_init__(self):
    checks.check_int("gd_plus_plus steps", self.steps, 1)
    checks.check_positive("gd_plus_plus step_size", self.step_size)
    checks.check_number("gd_plus_plus gamma", self.gamma, at_least=0)

  def weights(self, gram, xty):
    return gd_plus_plus_weights(gram, xty, self.step_size, self.gamma, self.steps)


@LEARNERS.register("preconditioned_gd")
@dataclasses.dataclass(frozen=True)
class PreconditionedGD(_Solver):
  """K steps w ← w + η(S + εI)⁻¹(b − S w) from w = 0, S = XᵀX/k and b = Xᵀy/k of the prefix."""

  steps: int = 1          # preconditioned steps
  step_size: float = 1.0  # η
  damping: float = 1e-3   # ε added to S before inverting (S is singular below D pairs)

  def __post_init__(self):
    checks.check_int("preconditioned_gd steps", self.steps, 1)
    checks.check_positive("preconditioned_gd step_size", self.step_size)
    checks.check_positive("preconditioned_gd damping", self.damping)

  def weights(self, gram, xty):
    return preconditioned_gd_weights(gram, xty, self.step_size, self.steps, self.damping)


@LEARNERS.register("newton_schulz")
@dataclasses.dataclass(frozen=True)
class NewtonSchulz(_Solver):
  """ŵ = M_K Xᵀy/k, M_K from K Newton–Schulz iterations for (XᵀX/k)⁻¹ from I/‖XᵀX/k‖_F."""

  steps: int = 10  # Newton–Schulz iterations

  def __post_init__(self):
    checks.check_int("newton_schulz steps", self.steps, 1)

  def weights(self, gram, xty):
    return newton_schulz_weights(gram, xty, self.steps)


def _spectral(gram: jax.Array, xty: jax.Array, query_x: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
  """S = U diag(λ) Uᵀ: (λ [..., D], z [..., Q, D, O]) with ŷ_qo = Σ_d z_qdo·c(λ_d).

  gram = S [..., D, D], xty = b [..., D, O], query_x [..., Q, D]; z = (Uᵀx_q)_d (Uᵀb)_do.
  """
  lam, basis = jnp.linalg.eigh(gram)
  b = precise_einsum("...ed,...eo->...do", basis, xty)
  q = precise_einsum("...ed,...qe->...qd", basis, query_x)
  return lam, q[..., None] * b[..., None, :, :]


def _apply_filter(lam: jax.Array, z: jax.Array, c: jax.Array) -> jax.Array:
  """ŷ [..., Q, O] from a filter's values c [..., D] on the eigenvalues lam."""
  return jnp.einsum("...qdo,...d->...qo", z, c)


# Tuning: a grid search on held-out tasks.

@dataclasses.dataclass(frozen=True)
class Tuned:
  """A grid search's result: the best values, their loss, and the last round's grid."""

  step_size: float      # η*
  gamma: float          # γ* (0 for GD)
  loss: float           # mean squared error (Σ over outputs) of the queries at (η*, γ*)
  grid: np.ndarray      # [G, 2] the last round's (η, γ)
  losses: np.ndarray    # [G] their losses


def _held_out(episode: Episode, context_points: int):
  """Per prompt, (λ [B, D], z [B, Q, D, O], y [B, Q, O]): the first N pairs are the context,
  the later points the queries."""
  if not 1 <= context_points < episode.num_points:
    raise ValueError(f"context_points must be in [1, {episode.num_points - 1}] for episodes of "
                     f"{episode.num_points} points (a query must follow), got {context_points}")
  x, y = episode.x[:, :context_points], episode.y[:, :context_points]
  gram = precise_einsum("bnd,bne->bde", x, x) / context_points
  xty = precise_einsum("bnd,bno->bdo", x, y) / context_points
  lam, z = _spectral(gram, xty, episode.x[:, context_points:])
  return lam, z, episode.y[:, context_points:]


def _loss(data, c: jax.Array) -> jax.Array:
  lam, z, y = data
  return jnp.mean(jnp.sum(jnp.square(_apply_filter(lam, z, c) - y), axis=-1))


def grid_search(loss_fn: Callable[[jax.Array, Any], jax.Array], data: Any, low, high,
                points: int, rounds: int, chunk: int = 64
                ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
  """Minimises loss_fn(values [n], data) -> scalar over the box [low, high] (n axes).

  Each round scores a grid of `points` values per axis (vmapped, `chunk` values at a time);
  the next round spans two grid spacings either side of the best value, clipped to the box.
  Returns (best [n], its loss, the last grid [G, n], its losses [G]).
  """
  low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
  # One compile serves every round: the grid's shape does not change.
  evaluate = jax.jit(lambda grid, data: jax.lax.map(lambda v: loss_fn(v, data), grid,
                                                    batch_size=chunk))
  lo, hi = low.copy(), high.copy()
  for _ in range(rounds):
    axes = [np.linspace(a, b, points) for a, b in zip(lo, hi)]
    grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=-1)
    losses = np.asarray(evaluate(jnp.asarray(grid, jnp.float32), data), np.float64)
    best = grid[int(np.nanargmin(losses))]
    spacing = (hi - lo) / (points - 1)
    lo, hi = np.maximum(best - 2 * spacing, low), np.minimum(best + 2 * spacing, high)
  return best, float(np.nanmin(losses)), grid, losses


def _scale(lam: jax.Array) -> float:
  """1/s̄, s̄ = the mean eigenvalue of S: the natural unit of η and γ at this input scale."""
  return float(1.0 / jnp.mean(lam))


def tune_gd(episode: Episode, context_points: int, steps: int, max_step_size: float | None = None,
            points: int = 41, rounds: int = 4) -> Tuned:
  """η for K GD steps (the `gd` baseline) minimising the held-out loss at N = `context_points`.

  Each prompt of `episode` gives its first N pairs as the context and its later points
  (at least one) as queries. η is searched in [0, max_step_size], by default [0, 2/s̄].
  """
  data = _held_out(episode, context_points)
  high = 2 * _scale(data[0]) if max_step_size is None else max_step_size
  loss_fn = lambda v, d: _loss(d, gd_filter(d[0], v[0], steps))
  best, loss, grid, losses = grid_search(loss_fn, data, [0.0], [high], points, rounds)
  return Tuned(float(best[0]), 0.0, loss, np.concatenate([grid, 0 * grid], -1), losses)


def tune_gd_plus_plus(episode: Episode, context_points: int, steps: int,
                      max_step_size: float | None = None, max_gamma: float | None = None,
                      points: int = 41, rounds: int = 4) -> Tuned:
  """(η, γ) for K GD++ steps minimising the held-out loss at N = `context_points`.

  As `tune_gd`, over [0, max_step_size] × [0, max_gamma], by default [0, 4/s̄] × [0, 1/s̄]: the
  x map shrinks S's spectrum, so GD++ takes larger steps than GD.
  With K = 1 the x map never reaches a prediction: γ is not identified (the loss is flat in it).
  With unbounded x (Gaussian) the loss is ruled by the rare tasks with a large eigenvalue of S
  (a degree-(2K+1) polynomial of it), so the tuned values vary from sample to sample; von
  Oswald et al.'s U(−0.5, 0.5) does not have that problem.
  """
  data = _held_out(episode, context_points)
  scale = _scale(data[0])
  high = [4 * scale if max_step_size is None else max_step_size,
          scale if max_gamma is None else max_gamma]
  loss_fn = lambda v, d: _loss(d, gd_plus_plus_filter(d[0], v[0], v[1], steps))
  best, loss, grid, losses = grid_search(loss_fn, data, [0.0, 0.0], high, points, rounds)
  return Tuned(float(best[0]), float(best[1]), loss, grid, losses)
