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


def linear_recurrent_mix(q: jax.Array, k: jax.Array, v: jax.Array, query_positions: jax.Array,
                         private_keys: jax.Array | None = None) -> jax.Array:
  """Linear attention, (qkᵀ)v over the causal keys as `causal_mix` computes it, in its recurrent
  form (Katharopoulos et al. 2020; Schlag et al. 2021): a fast-weight state per head,

      S_t = S_{t−1} + v_t k_tᵀ   [d_v, d_k],        out_t = S_t q_t,

  updated token by token, so what a query reads of the tokens before it is one d×d matrix per
  head whatever their number. A private key (`private_keys` [T] True) is added for its own
  position's query alone and left out of the state. q [B, Q, H, d] at `query_positions` [Q].
  """
  batch, length, heads, _ = k.shape
  queries = jnp.zeros((batch, length) + q.shape[2:], q.dtype).at[:, query_positions].set(q)
  kept = jnp.ones(length, bool) if private_keys is None else ~private_keys

  def step(state, token):
    q_t, k_t, v_t, kept_t = token
    own = jnp.einsum("bhe,bhd->bhed", v_t, k_t)
    out = jnp.einsum("bhed,bhd->bhe", state + own, q_t)
    return state + jnp.where(kept_t, own, 0.0), out

  start = jnp.zeros((batch, heads, v.shape[-1], k.shape[-1]), v.dtype)
  tokens = tuple(jnp.moveaxis(a, 1, 0) for a in (queries, k, v)) + (kept,)
  _, out = jax.lax.scan(step, start, tokens)                               # [T, B, H, d_v]
  return jnp.moveaxis(out, 0, 1)[:, query_positions]
