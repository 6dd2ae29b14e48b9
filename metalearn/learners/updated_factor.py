"""Least squares and ridge at every prefix of a prompt, from one fit updated point by point.

Garg et al.'s evaluation solves a least-squares problem for every prefix of every prompt.
Solving each from scratch (an SVD or `lstsq` per prefix) repeats almost all of the work; prefix
sums of XᵀX (normal equations) square the condition number, which float32 cannot afford near
k = D. Here a scan over the points keeps, per prompt, the solution of the pairs seen so far and
updates it with each new pair in O(D²) work, all of it batched matrix-vector products:

- `weights` ŵ [D, O], the minimum-norm least-squares solution of the pairs seen;
- `root` T [D, D] with TTᵀ = (XᵀX)⁺, the pseudo-inverse of the pairs' Gram matrix, kept as a
  square root (Potter's square-root filter) so that float32 loses accuracy like ε·κ, not ε·κ²;
- `null` N [D, D], the projector onto the inputs' unexplored directions (I at the start).

A new pair (x, y) is first predicted, ŷ = xᵀŵ (the prediction from the pairs before it). If x
has a component r = Nx outside the explored span (|r| > rtol·|x|; applied twice, as classical
Gram–Schmidt twice over, so that N's rounding does not accumulate), the new direction q = r/|r|
fits it exactly: ŵ += q(y − ŷ)/|r|, T gains the column q/|r| and loses q aᵀ/|r| (a = Tᵀx), and
N loses qqᵀ; ŵ stays in the span of the inputs, hence minimum norm. Otherwise it is a recursive
least-squares step on T: a = Tᵀx, α = 1 + |a|², ŵ += Ta(y − ŷ)/α, T −= Ta aᵀ/(α + √α).
Ridge with penalty λ is least squares after the pairs (√λ·e_i, 0): it starts from T = I/√λ,
every direction explored, and only takes the second kind of step.

No LAPACK call (jaxlib's batched kernels share XLA's CPU thread pool) and only elementwise
float32 work and batched contractions at the highest precision (accelerators may lower the
default). A test holds every prefix to a float64 pseudo-inverse and ridge solve.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metalearn.learners.prefix_baseline import precise_einsum as _einsum


class Fit(NamedTuple):
  """The pairs seen so far, per prompt."""

  weights: jax.Array     # [B, D, O] ŵ, the minimum-norm least-squares solution
  root: jax.Array        # [B, D, D] T, TTᵀ = (XᵀX)⁺ (ridge: (XᵀX + λI)⁻¹)
  null: jax.Array        # [B, D, D] N, the projector onto the unexplored directions
  explored: jax.Array    # [B] int32, the directions explored (the rank of X)


def least_squares_start(batch: int, dim: int, out: int, dtype=jnp.float32) -> Fit:
  """No pairs yet: every direction unexplored, ŵ = 0."""
  eye = jnp.broadcast_to(jnp.eye(dim, dtype=dtype), (batch, dim, dim))
  return Fit(jnp.zeros((batch, dim, out), dtype), jnp.zeros_like(eye), eye,
             jnp.zeros((batch,), jnp.int32))


def ridge_start(batch: int, dim: int, out: int, lam: float, dtype=jnp.float32) -> Fit:
  """The pairs (√λ·e_i, 0): least squares from here is ridge with penalty λ."""
  eye = jnp.broadcast_to(jnp.eye(dim, dtype=dtype), (batch, dim, dim))
  return Fit(jnp.zeros((batch, dim, out), dtype), eye / jnp.sqrt(jnp.asarray(lam, dtype)),
             jnp.zeros_like(eye), jnp.full((batch,), dim, jnp.int32))


def _matvec(m: jax.Array, v: jax.Array) -> jax.Array:
  return _einsum("bde,be->bd", m, v)


def _outer(a: jax.Array, b: jax.Array) -> jax.Array:
  return a[:, :, None] * b[:, None, :]


def add(fit: Fit, x: jax.Array, y: jax.Array, rtol: float, explore: bool = True
        ) -> tuple[Fit, jax.Array]:
  """The fit with the pair (x [B, D], y [B, O]) added, and ŷ [B, O], x's prediction before.

  `explore=False` (ridge: every direction is explored from the start) skips the test for a
  new direction.
  """
  prediction = _einsum("bd,bdo->bo", x, fit.weights)
  residual = y - prediction
  a = _einsum("bed,be->bd", fit.root, x)                       # Tᵀx
  gain = _matvec(fit.root, a)                                  # T Tᵀ x
  alpha = 1 + jnp.sum(a * a, axis=-1)
  updated = fit._replace(
      weights=fit.weights + (gain / alpha[:, None])[:, :, None] * residual[:, None, :],
      root=fit.root - (1 / (alpha + jnp.sqrt(alpha)))[:, None, None] * _outer(gain, a))
  if not explore:
    return updated, prediction
  r = _matvec(fit.null, _matvec(fit.null, x))
  r2 = jnp.sum(r * r, axis=-1)
  new = (r2 > rtol**2 * jnp.sum(x * x, axis=-1)) & (fit.explored < x.shape[-1])
  norm = jnp.sqrt(jnp.where(new, r2, 1.0))
  q = r / norm[:, None]
  slot = jax.nn.one_hot(fit.explored, x.shape[-1], dtype=x.dtype)     # T's next free column
  grown = Fit(fit.weights + (q / norm[:, None])[:, :, None] * residual[:, None, :],
              fit.root + _outer(q / norm[:, None], slot - a),
              fit.null - _outer(q, q), fit.explored + 1)
  pick = lambda g, u: jnp.where(new.reshape((-1,) + (1,) * (g.ndim - 1)), g, u)
  return jax.tree.map(pick, grown, updated), prediction


def fit_pairs(start: Fit, x: jax.Array, y: jax.Array, rtol: float, explore: bool = True
              ) -> tuple[Fit, jax.Array]:
  """Adds x [B, P, D], y [B, P, O] point by point: (the fit, each point's prediction from the
  points before it [B, P, O])."""
  def step(fit, pair):
    if not explore:
      return add(fit, *pair, rtol=rtol, explore=False)
    # Once every prompt has explored all D directions (k ≥ D on generic inputs), the test for
    # a new one can only say no: the cheaper step computes the same numbers.
    return jax.lax.cond(jnp.all(fit.explored == fit.null.shape[-1]),
                        lambda: add(fit, *pair, rtol=rtol, explore=False),
                        lambda: add(fit, *pair, rtol=rtol, explore=True))
  fit, predictions = jax.lax.scan(step, start, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(y, 0, 1)))
  return fit, jnp.swapaxes(predictions, 0, 1)


def start_for(x: jax.Array, y: jax.Array, ridge: float | None) -> Fit:
  """The empty fit for prompts x [B, P, D], y [B, P, O]: least squares, or ridge with λ."""
  shape = (x.shape[0], x.shape[-1], y.shape[-1])
  if ridge is None:
    return least_squares_start(*shape, x.dtype)
  return ridge_start(*shape, ridge, x.dtype)

