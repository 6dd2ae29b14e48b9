"""Distribution shifts for in-context linear regression (Garg et al. 2022, section 4).

Garg et al. 2022 ("What can transformers learn in-context? A case study of simple
function classes") train on x ~ N(0, I), w ~ N(0, I) and test on prompts drawn
otherwise: a skewed input covariance, inputs in a d/2-dimensional subspace, scaled
inputs or outputs, noisy outputs, context and query in different orthants, a query
orthogonal to the context, a query equal to a context input. Each shift here wraps a
`LinearRegression` or `SparseLinearRegression` family: a prompt is the family's own
draw, then its x (or w) moves and y is recomputed as y = xw + σε. A prompt's first
`context_points` points are its context, the rest its queries, each scored from the
context alone (`evaluation.scores.query_metrics`). The same key gives the same base draw under
every shift, so shifts are compared on paired prompts, and `shift_episodes` stacks
all of them into one episode that one compiled call makes and a learner predicts in
one pass.
"""

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.tasks.linear import LinearRegression, SparseLinearRegression


@dataclasses.dataclass(frozen=True)
class ShiftSettings:
  """How strong each shift is."""

  x_scale: float = 2.0     # scaled_x: every input is multiplied by this
  w_scale: float = 2.0     # scaled_w: the true weights, hence y, are multiplied by this
  noise_std: float = 1.0   # noisy_y: std of the extra Gaussian noise on every y
  skew_power: float = 2.0  # skewed_covariance: eigenvalue i ∝ i^-skew_power (Garg: 2)

  def __post_init__(self):
    for name in ("x_scale", "w_scale", "skew_power"):
      checks.check_positive(name, getattr(self, name), name_kind=False)
    checks.check_number("noise_std", self.noise_std, at_least=0, name_kind=False)


def _orthonormal_columns(a: jax.Array) -> jax.Array:
  """Q of a = QR, R upper-triangular with a positive diagonal, for a [dim, cols] of full rank.

  Gram–Schmidt, each column projected out twice ("twice is enough"), in plain XLA ops. Not
  jnp.linalg.qr: jaxlib's batched LAPACK kernels share XLA's CPU thread pool, and several of
  them in one compiled call (one per shift) can deadlock it (seen with jaxlib 0.10.2 on 2 cores).
  """
  a = jnp.asarray(a)
  dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)

  def step(j, q):
    column = a[:, j]
    for _ in range(2):
      column = column - dot(q, dot(q.T, column))   # the columns of q not yet made are zero
    return q.at[:, j].set(column / jnp.linalg.norm(column))
  return jax.lax.fori_loop(0, a.shape[1], step, jnp.zeros_like(a))


def _random_orthonormal(key: jax.Array, dim: int, cols: int) -> jax.Array:
  """[dim, cols] orthonormal columns spanning a uniformly random subspace.

  The Q of a Gaussian matrix's QR with R's diagonal positive is Haar-distributed (Mezzadri
  2007, "How to generate random matrices from the classical compact groups").
  """
  return _orthonormal_columns(jax.random.normal(key, (dim, cols)))


# Each shift maps (key, x [points, dim], w [dim, 1], context_points, settings) to
# (x, w, signal_factor, extra_noise_std): the zero predictor's loss at the queries is
# then signal_factor·(the family's zero_loss − σ²) + σ² + extra_noise_std².

def _skewed_covariance(key, x, w, context_points, settings):
  # x ← Σ^½x, Σ = U diag(λ) Uᵀ. trace Σ = dim, and U is uniform and independent of w,
  # so E[(wᵀx)²] = τ²·E[x_i²]·trace(Σ)/dim per non-zero weight: zero_loss is unchanged.
  dim = x.shape[1]
  lam = jnp.arange(1, dim + 1, dtype=jnp.float32) ** -settings.skew_power
  lam = lam * dim / jnp.sum(lam)
  u = _random_orthonormal(key, dim, dim)
  return x @ (u * jnp.sqrt(lam)) @ u.T, w, 1.0, 0.0


def _scaled_x(key, x, w, context_points, settings):
  return settings.x_scale * x, w, settings.x_scale**2, 0.0


def _scaled_w(key, x, w, context_points, settings):
  # Garg et al.'s "scaled y": y = (cw)ᵀx scales the signal, not the task's noise.
  return x, settings.w_scale * w, settings.w_scale**2, 0.0


def _noisy_y(key, x, w, context_points, settings):
  return x, w, 1.0, settings.noise_std


def _orthants(key, x, w, context_points, settings):
  # Garg et al.: one random sign per coordinate for all context inputs; queries as usual.
  # |x|·s has the second moments of x, so the queries' zero_loss is unchanged anyway.
  signs = jnp.where(jax.random.bernoulli(key, 0.5, (x.shape[1],)), 1.0, -1.0)
  is_context = (jnp.arange(x.shape[0]) < context_points)[:, None]
  return jnp.where(is_context, jnp.abs(x) * signs, x), w, 1.0, 0.0


def _orthogonal_query(key, x, w, context_points, settings):
  # For x ~ N(0, I), x/‖x‖ is uniform and independent of ‖x‖, so the projected and
  # rescaled query is ‖x‖ times a uniform unit vector of a random (dim − C)-subspace
  # independent of w: E[(wᵀx_q)²] = E‖x‖²·E‖w‖²/dim = E‖w‖², zero_loss is unchanged.
  context, queries = x[:context_points], x[context_points:]
  if context_points > 0:
    basis = _orthonormal_columns(context.T)                          # [dim, C]
    projected = queries
    for _ in range(2):  # a second pass removes what rounding left of the first ("twice is enough")
      projected = projected - (projected @ basis) @ basis.T
    norm = lambda a: jnp.linalg.norm(a, axis=1, keepdims=True)
    queries = projected * (norm(queries) / norm(projected))
  return jnp.concatenate([context, queries]), w, 1.0, 0.0


def _repeated_query(key, x, w, context_points, settings):
  chosen = jax.random.randint(key, (x.shape[0] - context_points,), 0, context_points)
  return jnp.concatenate([x[:context_points], x[chosen]]), w, 1.0, 0.0


def _half_subspace(key, x, w, context_points, settings):
  # x ← √(dim/k)·BBᵀx, k = dim//2: E‖x‖² stays dim, and as B is uniform and independent
  # of w, E[(wᵀx)²] = (dim/k)·E[x_i²]·E[wᵀBBᵀw] = E[x_i²]·E‖w‖²: zero_loss is unchanged.
  dim = x.shape[1]
  basis = _random_orthonormal(key, dim, dim // 2)
  return (x @ basis) @ basis.T * jnp.sqrt(dim / (dim // 2)), w, 1.0, 0.0


_SHIFT_FNS = {
    "none": None,  # the family's own prompt, untouched: the reference row
    "skewed_covariance": _skewed_covariance,
    "scaled_x": _scaled_x,
    "scaled_w": _scaled_w,
    "noisy_y": _noisy_y,
    "orthants": _orthants,
    "orthogonal_query": _orthogonal_query,
    "repeated_query": _repeated_query,
    "half_subspace": _half_subspace,
}
SHIFTS = tuple(_SHIFT_FNS)


def wraps(task: object) -> bool:
  """Whether the shifts wrap `task`: a linear regression family, whose info['w'] are the true
  weights that a shift moves before y is recomputed."""
  return isinstance(task, (LinearRegression, SparseLinearRegression))


def x_distribution_of(task: LinearRegression | SparseLinearRegression) -> str:
  """How a family the shifts wrap draws x: "normal" is N(0, I), Garg et al.'s (sparse: always)."""
  return getattr(task, "x_distribution", "normal")


def _check(task, shifts: tuple[str, ...], batch: int, points: int, context_points: int,
           settings: ShiftSettings) -> None:
  """Raises a clear error for anything the shifts cannot make, before any jax work."""
  for shift in shifts:
    checks.check_one_of("shift", shift, SHIFTS)
  if not shifts:
    raise ValueError(f"no shifts given; allowed: {', '.join(SHIFTS)}")
  if len(set(shifts)) != len(shifts):
    raise ValueError(f"each shift may be named once, got {shifts}")
  if not wraps(task):
    raise TypeError("shifts need a LinearRegression or SparseLinearRegression task (its "
                    f"info['w'] are the true weights), got {type(task).__name__}")
  if not isinstance(settings, ShiftSettings):
    raise TypeError(f"settings must be a ShiftSettings, got {type(settings).__name__}")
  checks.check_int("the number of prompts", batch, 1, name_kind=False)
  if not 0 <= context_points < points:
    raise ValueError(f"context_points must be in [0, points={points}) so that a query "
                     f"remains, got {context_points}")
  task.check_points(points)
  if "orthogonal_query" in shifts:
    if context_points >= task.dim:
      raise ValueError(f"orthogonal_query needs context_points < dim, so that a direction "
                       f"orthogonal to the context remains; got context_points="
                       f"{context_points}, dim={task.dim}")
    x_distribution = x_distribution_of(task)
    if x_distribution != "normal":
      raise ValueError("orthogonal_query keeps zero_loss exact only for a rotation-invariant "
                       f"x, x_distribution='normal'; got {x_distribution!r}")
  if "repeated_query" in shifts and context_points < 1:
    raise ValueError(f"repeated_query repeats a context input, so it needs context_points "
                     f">= 1, got {context_points}")
  if "half_subspace" in shifts and task.dim < 2:
    raise ValueError(f"half_subspace needs dim >= 2 (a dim//2 >= 1 subspace), got {task.dim}")


def _sample_one(task, shift, context_points, settings, key, points):
  x, y, zero_loss, info = task.sample_one(key, points, jnp.ones(task.dim))
  if shift == "none":
    return x, y, zero_loss, info
  # A stream apart from the family's own, so that the base draw stays the one "none" gives.
  k_shift, k_noise, k_extra = jax.random.split(jax.random.fold_in(key, 1), 3)
  x, w, signal_factor, extra_std = _SHIFT_FNS[shift](k_shift, x, info["w"], context_points,
                                                     settings)
  noise_var = task.noise_std**2
  y = (x @ w + task.noise_std * jax.random.normal(k_noise, (points, 1))
       + extra_std * jax.random.normal(k_extra, (points, 1)))
  zero_loss = (zero_loss - noise_var) * signal_factor + noise_var + extra_std**2
  return x, y, zero_loss, {**info, "w": w}


def _sample_keys(task, shift, keys, points, context_points, settings) -> Episode:
  x, y, zero_loss, info = jax.vmap(
      lambda k: _sample_one(task, shift, context_points, settings, k, points))(keys)
  return Episode(x=x, y=y, mask=jnp.ones(x.shape[:2]), zero_loss=zero_loss, info=info)


def sample_shifted(task: LinearRegression | SparseLinearRegression, shift: str, rng: jax.Array,
                   batch: int, points: int, context_points: int,
                   settings: ShiftSettings = ShiftSettings()) -> Episode:
  """`batch` prompts of `points` points under one shift (Garg et al. 2022, section 4).

  The first `context_points` points are the context, the rest the queries; all task
  dimensions are active. "none" is exactly `task.sample(rng, batch, points)`, and every
  other shift moves that same draw. `zero_loss` is the zero predictor's expected loss at
  the queries under the shifted distribution; `info["w"]` the (shifted) true weights.
  """
  _check(task, (shift,), batch, points, context_points, settings)
  return _sample_keys(task, shift, jax.random.split(rng, batch), points, context_points,
                      settings)


def shift_episodes(task: LinearRegression | SparseLinearRegression, shifts: Sequence[str],
                   num_prompts: int, points: int, context_points: int, seed: int = 0,
                   settings: ShiftSettings = ShiftSettings()) -> Episode:
  """`num_prompts` prompts per shift, stacked along the batch in the order of `shifts`.

  One compiled call; prompt i of every shift starts from the same base draw, and the
  "none" rows equal `evaluation.prompts.held_out_episodes(task, num_prompts, points, seed)`.
  """
  shifts = (shifts,) if isinstance(shifts, str) else tuple(shifts)
  _check(task, shifts, num_prompts, points, context_points, settings)
  return _shift_episodes(task, shifts, num_prompts, points, context_points, settings, seed)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _shift_episodes(task, shifts, num_prompts, points, context_points, settings, seed):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_prompts)
  parts = [_sample_keys(task, shift, keys, points, context_points, settings)
           for shift in shifts]
  return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


def by_shift(per_prompt, shifts: Sequence[str]) -> dict:
  """Splits an array over the prompts of `shift_episodes` (leading axis) into one per shift."""
  shifts = (shifts,) if isinstance(shifts, str) else tuple(shifts)
  if len(per_prompt) % len(shifts):
    raise ValueError(f"{len(per_prompt)} prompts do not split evenly over {len(shifts)} "
                     f"shifts {shifts}")
  size = len(per_prompt) // len(shifts)
  return {shift: per_prompt[i * size:(i + 1) * size] for i, shift in enumerate(shifts)}
