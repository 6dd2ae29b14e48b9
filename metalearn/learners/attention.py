"""How causal attention mixes values: softmax, linear, ReLU, or momentum (Dai et al. 2022)."""

import jax
import jax.numpy as jnp

from metalearn.core import checks

KINDS = ("softmax", "linear", "relu", "momentum")


def check_kind(kind: str, momentum: float) -> None:
  checks.check_one_of("attention", kind, KINDS)
  if kind == "momentum" and not 0.0 < momentum < 1.0:
    raise ValueError(f"momentum attention needs 0 < momentum < 1, got {momentum}")


def causal_mix(q: jax.Array, k: jax.Array, v: jax.Array, query_positions: jax.Array,
               kind: str, momentum: float, private_keys: jax.Array | None = None) -> jax.Array:
  """Mixes values v [B, T, H, d] for queries q [B, Q, H, d] (already scaled) at token
  positions `query_positions` [Q]; each query sees keys at positions <= its own, except
  that a key where `private_keys` [T] is True is seen by its own position alone (von
  Oswald's layout: a query token (x_i, 0) must not inform later predictions).

  - softmax: softmax(qkᵀ) v;
  - linear: (qkᵀ) v, no normalisation;
  - relu: relu(qkᵀ) v divided by the number of tokens attended to;
  - momentum: softmax attention plus Σ_{i<t} η^{t−i} v_i, an exponentially decayed
    sum of the earlier values (Dai et al. 2022, momentum attention), η = `momentum`.
  """
  key_positions = jnp.arange(k.shape[1])
  lag = query_positions[:, None] - key_positions[None, :]           # [Q, T]
  causal = lag >= 0
  if private_keys is not None:
    causal = causal & (~private_keys[None, :] | (lag == 0))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  if kind in ("softmax", "momentum"):
    weights = jax.nn.softmax(jnp.where(causal, logits, jnp.finfo(logits.dtype).min), axis=-1)
  elif kind == "linear":
    weights = jnp.where(causal, logits, 0.0)
  else:
    weights = jnp.where(causal, jax.nn.relu(logits), 0.0) / jnp.sum(causal, axis=-1,
                                                                     keepdims=True)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  if kind == "momentum":
    decay = jnp.where(causal & (lag > 0), momentum ** jnp.maximum(lag, 0).astype(v.dtype), 0.0)
    out = out + jnp.einsum("qk,bkhd->bqhd", decay, v)
  return out
