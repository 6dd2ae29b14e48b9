"""Writing a context into weights: in linear attention, the context's effect on every later query
is exactly a weight update.

A linear-attention layer adds to a query Σ_j (q · k_j) v_j over the tokens it sees, with q the
query's attention query vector. The context tokens' part of that sum is F q with the fast weight

    F_h = Σ_{j in context} v_j k_jᵀ          per head, rank at most the number of context tokens,

(normalised as the layer normalises: 1/N in a GD-layer network, and folded with its output
projection P_h there), computed once from the context's hidden states, which do not depend on
the query (causal). `write_context` runs the context alone through the network and keeps F per
layer application; `predict_written` predicts any query with no context in its prompt, from the
query's own token plus F q in every layer. Two learners can be written:

- gd_layers (von Oswald et al.): a query attends to the context tokens only. Under the GD
  construction (one layer, step η) F's y-by-x block is −(η/N) Σ_i y_i x_iᵀ: the prediction
  (η/N) Σ_i y_i x_iᵀ x_q is one GD step from w = 0.
- transformer with attention="linear": the query keeps the position it had after the context
  and still attends to its own token (a further context takes the positions after those
  already written, so with decay 1 the contexts written one after another predict as the
  same contexts in one prompt); in the concatenated layout the context's (x_i, 0) tokens
  are seen by themselves alone, so only the (x_i, y_i) tokens are written.

LayerNorm (or RMSNorm) and the MLPs act on each token alone and carry over unchanged; so do
rotary positions, as the keys written are rotated at their own positions and a query at its
own, which keeps q · k (the transformer sows the rotated keys). Softmax (and ReLU,
momentum) attention has no such update and is refused; analysis/context_distillation.py moves
such a context into LoRA adapters instead, by learning from the model's own predictions.

`write_context(..., prior=written, decay=λ)` writes a further context into the same weights:
its tokens read through what is already written (as if the earlier contexts preceded it), and
F ← λ F_prior + F_new (analysis/context_accumulation.py: what tasks written in turn keep).
"""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.learners.gd_layers import MLP, GDLayers
from metalearn.learners.transformer import Transformer, tokens_for

WRITABLE = "gd_layers, or transformer with attention='linear'"


@flax.struct.dataclass
class Written:
  """Contexts written into weights: per layer application, F [heads, a, b]."""

  layers: list[jax.Array]
  # The context tokens written in all: what a KV cache would hold, and in the transformer the
  # position a query takes (the contexts fill positions 0 .. tokens − 1, one after another).
  tokens: int = flax.struct.field(pytree_node=False)


def check_writable(learner: Any, what: str) -> None:
  """Refuses (naming what is allowed) a learner whose context is not exactly a weight update."""
  if isinstance(learner, GDLayers):
    if learner.softmax:
      raise ValueError(f"{what}: softmax attention has no exact weight update for its context; "
                       "use a gd_layers learner with softmax=False")
  elif isinstance(learner, Transformer):
    if learner.attention != "linear":
      raise ValueError(f"{what}: {learner.attention} attention has no exact weight update for "
                       "its context; allowed: attention='linear'")
  else:
    raise TypeError(f"{what}: writing a context needs {WRITABLE}, got "
                    f"{type(learner).__name__}")


def write_context(learner: Any, params: Any, x: jax.Array, y: jax.Array,
                  prior: Written | None = None, decay: float = 1.0) -> Written:
  """The fast weights of one context (x [N, D], y [N, O]); with `prior`, added to those
  already written (times `decay`, in [0, 1]), the context read through them."""
  check_writable(learner, "write_context")
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 1:
    raise ValueError(f"write_context: one context of N >= 1 pairs, x [N, D] and y [N, O]; got "
                     f"x {x.shape} and y {y.shape}")
  if not 0.0 <= decay <= 1.0:
    raise ValueError(f"write_context: decay must be in [0, 1], got {decay}")
  through, before = (None, 0) if prior is None else (prior.layers, prior.tokens)
  if isinstance(learner, Transformer):
    # The context's tokens and a query after them must fit the position table.
    learner.check_episode(before // 2 + x.shape[0] + 1, x.shape[1])
    layers = _transformer_write(learner, params, x, y, through, before)
    tokens = 2 * x.shape[0]
  else:
    layers, tokens = _gd_layers_write(learner, params, x, y, through), x.shape[0]
  if prior is not None:
    _check_layers(prior, len(layers), "write_context")
    layers = [decay * old + new for old, new in zip(prior.layers, layers)]
  return Written(layers, before + tokens)


def predict_written(learner: Any, params: Any, written: Written, x: jax.Array) -> jax.Array:
  """Predictions [Q, O] for queries x [Q, D] from `written` alone: no context in the prompt."""
  check_writable(learner, "predict_written")
  if isinstance(learner, Transformer):
    _check_layers(written, learner.num_layers, "predict_written")
    return _transformer_read(learner, params, written.layers, written.tokens, x)
  _check_layers(written, len(_blocks(learner)), "predict_written")
  out_dim = written.layers[0].shape[-1] - x.shape[-1]
  if out_dim < 1:
    raise ValueError(f"predict_written: fast weights of width {written.layers[0].shape[-1]} do "
                     f"not fit queries of {x.shape[-1]} inputs")
  tokens = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (out_dim,), x.dtype)], axis=-1)
  return -_gd_layers_pass(learner, params, tokens, False, written.layers)[1][:, -out_dim:]


def _check_layers(written: Written, applications: int, what: str) -> None:
  if len(written.layers) != applications:
    raise ValueError(f"{what}: the learner applies {applications} layers, got fast weights "
                     f"for {len(written.layers)}")


# The passes are compiled once per learner and shapes: run op by op, one compiles hundreds of
# small programs (15 of a test's 21 s were spent so).
@functools.partial(jax.jit, static_argnums=(0, 3))
def _transformer_read(learner: Transformer, params: Any, layers: list[jax.Array],
                      first_position: int, x: jax.Array) -> jax.Array:
  out_dim = params["read_out"]["kernel"].shape[-1]
  tokens = tokens_for(learner.layout, x[:, None], jnp.zeros((x.shape[0], 1, out_dim), x.dtype))
  return learner.decoder(out_dim).apply({"params": params}, tokens, layers, first_position)[:, 0]


@functools.partial(jax.jit, static_argnums=(0, 5))
def _transformer_write(learner: Transformer, params: Any, x: jax.Array, y: jax.Array,
                       through: list[jax.Array] | None, first_position: int
                       ) -> list[jax.Array]:
  decoder = learner.decoder(y.shape[-1])
  _, state = decoder.apply({"params": params}, tokens_for(learner.layout, x[None], y[None]),
                           through, first_position, mutable=["context"])
  seen = jnp.ones(2 * x.shape[0])
  if learner.layout == "concatenated":  # the (x_i, 0) tokens are private to themselves
    seen = (jnp.arange(2 * x.shape[0]) % 2).astype(x.dtype)
  layers = []
  for i in range(learner.num_layers):
    keys, values = state["context"][f"block_{i}"]["attn"]["keys_values"][0]
    layers.append(jnp.einsum("t,thd,the->hde", seen, values[0], keys[0]))
  return layers


def _blocks(learner: GDLayers) -> list[tuple[str, str, str, str]]:
  """(attention, norm, mlp, mlp_norm) parameter names per layer application, in order."""
  suffixes = [""] * learner.num_layers if learner.recurrent else [
      f"_{i}" for i in range(learner.num_layers)]
  return [(f"layer{s}", f"norm{s}", f"mlp{s}", f"mlp_norm{s}") for s in suffixes]


def _norm(learner: GDLayers, params: Any, name: str, tokens: jax.Array) -> jax.Array:
  return nn.LayerNorm().apply({"params": params[name]}, tokens) if learner.layer_norm else tokens


@functools.partial(jax.jit, static_argnums=(0, 3))
def _gd_layers_pass(learner: GDLayers, params: Any, tokens: jax.Array, is_context: bool,
                    through: list[jax.Array] | None) -> tuple[list[jax.Array], jax.Array]:
  """One pass of `tokens` [T, e] through the network: (each layer's F of them, the tokens
  after it). A context's tokens attend to each other, as in the prompt, and to `through` if
  given; queries attend to `through` alone (and F is not computed)."""
  fast = []
  for index, (attention, norm, mlp, mlp_norm) in enumerate(_blocks(learner)):
    layer = params[attention]
    normed = _norm(learner, params, norm, tokens)
    queries = jnp.einsum("hfe,je->hjf", layer["query"], normed)
    weights = 0.0 if through is None else through[index]
    if is_context:
      keys = jnp.einsum("hfe,ie->hif", layer["key"], normed)
      values = jnp.einsum("hfe,ie->hif", layer["value"], normed)
      own = jnp.einsum("hgf,hif,hik->hgk", layer["projection"], values, keys) / tokens.shape[0]
      fast.append(own)
      weights = weights + own
    tokens = tokens + jnp.einsum("hgk,hjk->jg", weights, queries)
    if learner.mlp:
      tokens = tokens + MLP(learner.mlp_width, learner.init_std).apply(
          {"params": params[mlp]}, _norm(learner, params, mlp_norm, tokens))
  return fast, tokens


def _gd_layers_write(learner: GDLayers, params: Any, x: jax.Array, y: jax.Array,
                     through: list[jax.Array] | None) -> list[jax.Array]:
  return _gd_layers_pass(learner, params, jnp.concatenate([x, y], axis=-1), True, through)[0]
