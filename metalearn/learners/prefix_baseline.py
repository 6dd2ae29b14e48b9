"""What the algorithmic baselines share: a fixed algorithm solving one problem per prefix.

Position i of a prompt is predicted from the pairs before it only, so a baseline solves P
problems per prompt, all of them together, from exclusive cumulative sums over the points.
The baselines of baselines.py and the solvers of gd_solvers.py are built on these (least
squares and ridge override `predict`: one fit per prompt, updated point by point).
"""

import functools

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode
from metalearn.learners.base import Learner

# Prompts solved together in one vectorised call; bounds the [P, P, ...] buffers of k-NN and
# of GD's dual weights (a chunk of 256 at P = 41, D = 20 is ~35 MB for k-NN).
_PROMPTS_PER_CHUNK = 256

# Baselines are references: full float32 matmuls on accelerators too (no bf16 passes).
precise_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def example_counts(num_points: int) -> jax.Array:
  """[P] float, the number of in-context examples k = i at position i."""
  return jnp.arange(num_points, dtype=jnp.float32)


def exclusive_cumsum(a: jax.Array) -> jax.Array:
  """Sums over the points before each one along axis 0 (zero at position 0)."""
  return jnp.concatenate([jnp.zeros_like(a[:1]), jnp.cumsum(a[:-1], axis=0)], axis=0)


def prefix_grams(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per prefix, XᵀX [P, D, D] and Xᵀy [P, D, O] of the pairs before each point."""
  xx = precise_einsum("pd,pe->pde", x, x)
  xy = precise_einsum("pd,po->pdo", x, y)
  return exclusive_cumsum(xx), exclusive_cumsum(xy)


def map_prompt_chunks(fn, x: jax.Array, y: jax.Array, chunk: int) -> jax.Array:
  """fn(x [C, P, D], y [C, P, O]) -> [C, P, O] over chunks of `chunk` prompts in turn (zero
  prompts pad the last chunk), joined back into [B, P, O]; one call of fn if B <= chunk."""
  batch = x.shape[0]
  if batch <= chunk:
    return fn(x, y)
  chunks = -(-batch // chunk)
  split = lambda a: jnp.pad(a, [(0, chunks * chunk - batch)] + [(0, 0)] * (a.ndim - 1)
                            ).reshape((chunks, chunk) + a.shape[1:])
  out = jax.lax.map(lambda xy: fn(*xy), (split(x), split(y)))
  return out.reshape((-1,) + out.shape[2:])[:batch]


def apply_weights(x: jax.Array, w: jax.Array) -> jax.Array:
  """Each point's own linear map: x [P, D], w [P, D, O] -> [P, O]."""
  return precise_einsum("pd,pdo->po", x, w)


class PrefixBaseline(Learner):
  """A fixed algorithm: `predict_prompt` maps one prompt's x [P, D], y [P, O] to [P, O]."""

  trainable = False

  def init(self, rng, episode: Episode):
    return {}

  def state_floats(self, params, episode: Episode) -> int:
    """XᵀX and Xᵀy of the pairs so far: all least squares, ridge and the GD solvers (which
    start at w = 0) read of a context."""
    dim, out = episode.dim, episode.y.shape[-1]
    return dim * dim + dim * out

  def predict(self, params, episode: Episode) -> jax.Array:
    """[batch, points, out]; the mask and info are not read (masked points come last)."""
    if episode.batch_size <= _PROMPTS_PER_CHUNK:
      return jax.vmap(self.predict_prompt)(episode.x, episode.y)
    return jax.lax.map(lambda xy: self.predict_prompt(*xy), (episode.x, episode.y),
                       batch_size=_PROMPTS_PER_CHUNK)

  def predict_prompt(self, x: jax.Array, y: jax.Array) -> jax.Array:
    raise NotImplementedError
