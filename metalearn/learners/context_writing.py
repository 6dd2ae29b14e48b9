"""Writing a context into weights: in linear self-attention, the context's effect on every later
query is exactly a weight update.

In a GD-layer network (gd_layers.py) a query token attends to the context tokens only, and head h
of a layer adds to it P_h (1/N) Σ_i v_i (k_i · q), with q = W_Q,h h the query's attention query
vector and k_i, v_i the context tokens' keys and values at that layer. So the layer's update of
any query is F_h q with the fast weight

    F_h = P_h · (1/N) Σ_i v_i k_iᵀ          [width, width], rank at most N,

computed once from the context's hidden states, which do not depend on the query. `write_context`
runs the context alone through the network (its tokens attend to each other, as in the prompt)
and keeps F per layer application (a recurrent network's shared weights meet a different
context state at each application); `predict_written` then predicts any query with no context
in its prompt. With the GD construction (one layer, step η) F's y-by-x block is
−(η/N) Σ_i y_i x_iᵀ: the prediction −Δy_q = (η/N) Σ_i y_i x_iᵀ x_q is one GD step from w = 0.

LayerNorm and the MLP act on each token alone, so they carry over unchanged; softmax attention
has no such update and is refused.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.learners.gd_layers import MLP, GDLayers

FastWeights = list[jax.Array]  # per layer application, F [heads, width, width]


def _blocks(learner: GDLayers) -> list[tuple[str, str, str, str]]:
  """(attention, norm, mlp, mlp_norm) parameter names per layer application, in order."""
  suffixes = [""] * learner.num_layers if learner.recurrent else [
      f"_{i}" for i in range(learner.num_layers)]
  return [(f"layer{s}", f"norm{s}", f"mlp{s}", f"mlp_norm{s}") for s in suffixes]


def _check(learner: Any, what: str) -> None:
  if not isinstance(learner, GDLayers):
    raise TypeError(f"{what}: writing a context needs a gd_layers learner (linear self-attention "
                    f"whose queries attend to the context only), got {type(learner).__name__}")
  if learner.softmax:
    raise ValueError(f"{what}: softmax attention has no exact weight update for its context; "
                     "use a gd_layers learner with softmax=False")


def _norm(learner: GDLayers, params: Any, name: str, tokens: jax.Array) -> jax.Array:
  return nn.LayerNorm().apply({"params": params[name]}, tokens) if learner.layer_norm else tokens


def _mlp(learner: GDLayers, params: Any, block: tuple[str, str, str, str],
         tokens: jax.Array) -> jax.Array:
  if not learner.mlp:
    return tokens
  _, _, mlp, mlp_norm = block
  normed = _norm(learner, params, mlp_norm, tokens)
  return tokens + MLP(learner.mlp_width, learner.init_std).apply({"params": params[mlp]}, normed)


def write_context(learner: GDLayers, params: Any, x: jax.Array, y: jax.Array) -> FastWeights:
  """The fast weights of one context (x [N, D], y [N, O]): per layer application, F [H, e, e]."""
  _check(learner, "write_context")
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 1:
    raise ValueError(f"write_context: one context of N >= 1 pairs, x [N, D] and y [N, O]; got "
                     f"x {x.shape} and y {y.shape}")
  tokens = jnp.concatenate([x, y], axis=-1)
  fast = []
  for block in _blocks(learner):
    layer = params[block[0]]
    normed = _norm(learner, params, block[1], tokens)
    keys = jnp.einsum("hfe,ie->hif", layer["key"], normed)
    values = jnp.einsum("hfe,ie->hif", layer["value"], normed)
    weights = jnp.einsum("hgf,hif,hik->hgk", layer["projection"], values, keys) / x.shape[0]
    fast.append(weights)
    # The context tokens attend to the whole context, as they do in the prompt.
    queries = jnp.einsum("hfe,ie->hif", layer["query"], normed)
    tokens = _mlp(learner, params, block,
                  tokens + jnp.einsum("hgk,hik->ig", weights, queries))
  return fast


def predict_written(learner: GDLayers, params: Any, fast: FastWeights, x: jax.Array
                    ) -> jax.Array:
  """Predictions [Q, O] for queries x [Q, D] from `fast` alone: no context in the prompt."""
  _check(learner, "predict_written")
  blocks = _blocks(learner)
  if len(fast) != len(blocks):
    raise ValueError(f"predict_written: the learner applies {len(blocks)} layers, got fast "
                     f"weights for {len(fast)}")
  out_dim = fast[0].shape[-1] - x.shape[-1]
  if out_dim < 1:
    raise ValueError(f"predict_written: fast weights of width {fast[0].shape[-1]} do not fit "
                     f"queries of {x.shape[-1]} inputs")
  tokens = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (out_dim,), x.dtype)], axis=-1)
  for block, weights in zip(blocks, fast):
    normed = _norm(learner, params, block[1], tokens)
    queries = jnp.einsum("hfe,je->hjf", params[block[0]]["query"], normed)
    tokens = _mlp(learner, params, block, tokens + jnp.einsum("hgk,hjk->jg", weights, queries))
  return -tokens[:, -out_dim:]
