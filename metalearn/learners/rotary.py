"""Rotary position embedding (RoPE, Su et al. 2021): positions as rotations of queries and keys.

Each pair of a head's first `dims` dimensions is rotated by the angle p·θ_i, with p the token's
position and θ_i = base^(−2i/dims), i = 0 .. dims/2 − 1. A rotation by p·θ of the query and by
p'·θ of the key leaves their dot product a function of p − p' alone (R(pθ)ᵀ R(p'θ) =
R((p' − p)θ)): attention sees relative positions only, and there is no position table to outgrow.

The pairs are (i, i + dims/2), GPT-NeoX's and LLaMA's layout (their `rotate_half`), rather than
Su et al.'s adjacent (2i, 2i + 1): the two differ by a fixed permutation of the head's
dimensions, which the learned q/k projections absorb, and this one rotates as those peers do,
partial rotation included (`dims` < head size, GPT-NeoX's rotary_pct).
"""

import jax
import jax.numpy as jnp

BASE = 10000.0  # Su et al.'s (and GPT-NeoX's, LLaMA's) base of the frequencies


def frequencies(dims: int, base: float = BASE) -> jax.Array:
  """θ_i = base^(−2i/dims) [dims/2], for the pairs (i, i + dims/2) of the rotated dimensions."""
  return base ** (-jnp.arange(0, dims, 2, dtype=jnp.float32) / dims)


def rotate(x: jax.Array, positions: jax.Array, dims: int | None = None,
           base: float = BASE) -> jax.Array:
  """x [B, T, H, d] with each token's first `dims` dimensions (None: all d) rotated by its
  position p in `positions` [T]: (a, b) -> (a cos pθ_i − b sin pθ_i, b cos pθ_i + a sin pθ_i)
  for the pair (a, b) = (x_i, x_{i + dims/2}); the other d − dims dimensions pass unchanged."""
  head_dim = x.shape[-1]
  dims = head_dim if dims is None else dims
  if dims < 2 or dims % 2 or dims > head_dim:
    raise ValueError(f"rotary dims must be an even number in [2, {head_dim}] (the head size), "
                     f"got {dims}")
  if positions.shape != (x.shape[1],):
    raise ValueError(f"rotary positions must have shape ({x.shape[1]},) (one per token), got "
                     f"{positions.shape}")
  half = dims // 2
  angles = positions.astype(jnp.float32)[:, None] * frequencies(dims, base)   # [T, dims/2]
  cos, sin = jnp.cos(angles)[:, None], jnp.sin(angles)[:, None]              # [T, 1, dims/2]
  first, second, rest = x[..., :half], x[..., half:dims], x[..., dims:]
  rotated = [first * cos - second * sin, second * cos + first * sin, rest]
  return jnp.concatenate(rotated, axis=-1).astype(x.dtype)
