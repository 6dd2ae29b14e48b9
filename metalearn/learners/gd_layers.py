"""Linear self-attention networks in which a layer is a gradient-descent step (von Oswald et al. 2022).

Tokens are e_i = (x_i, y_i) for the context and e_q = (x_q, 0) for the query. A layer adds to
every token, for each head h,

    Δe_j = P_h W_V,h · (1/N) Σ_{i in context} e_i (W_K,h e_i)ᵀ (W_Q,h e_j),

linear attention with keys and values from the N context tokens only, no softmax and no 1/√d.
The prediction is minus the query's y entry after the last layer. With W_K = W_Q = [[I, 0], [0, 0]],
W_V = [[0, 0], [0, −I]] and P = η·I a layer is one GD step of size η on (1/2N) Σ (wᵀx_i − y_i)²
from the w the earlier layers hold (von Oswald et al., Prop. 1; their P = (η/N)·I folds the 1/N in).
GD++ also sets the x block of W_V to −(γ/η)·I, so each layer maps x ← (I − γ Σ_i x_i x_iᵀ / N) x.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metalearn.episode import Episode
from metalearn.learners.base import Learner
from metalearn.learners.registry import LEARNERS

_NAMES = ("query", "key", "value", "projection")


class LinearSelfAttention(nn.Module):
  """One multi-head linear self-attention layer over [tokens, width] with a context mask."""

  num_heads: int
  init_std: float

  @nn.compact
  def __call__(self, tokens: jax.Array, context: jax.Array) -> jax.Array:
    width = tokens.shape[-1]
    init = nn.initializers.normal(self.init_std)
    w_q, w_k, w_v, p = (self.param(name, init, (self.num_heads, width, width)) for name in _NAMES)
    context_tokens = tokens * context[:, None]                         # [T, e], zero off context
    keys = jnp.einsum("hfe,ie->hif", w_k, context_tokens)
    queries = jnp.einsum("hfe,je->hjf", w_q, tokens)
    values = jnp.einsum("hfe,ie->hif", w_v, context_tokens)
    scores = jnp.einsum("hif,hjf->hij", keys, queries) / jnp.maximum(jnp.sum(context), 1.0)
    update = jnp.einsum("hgf,hif,hij->jg", p, values, scores)
    return tokens + update


class GDLayerNetwork(nn.Module):
  """`num_layers` LSA layers (one shared set of weights if `recurrent`) over one prompt."""

  num_layers: int
  num_heads: int
  recurrent: bool
  init_std: float

  @nn.compact
  def __call__(self, tokens: jax.Array, context: jax.Array) -> jax.Array:
    if self.recurrent:
      layer = LinearSelfAttention(self.num_heads, self.init_std, name="layer")
      layers = [layer] * self.num_layers
    else:
      layers = [LinearSelfAttention(self.num_heads, self.init_std, name=f"layer_{i}")
                for i in range(self.num_layers)]
    for layer in layers:
      tokens = layer(tokens, context)
    return tokens


def _prefix_tokens(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """For one prompt (x [P, D], y [P, O]): per query i, tokens [P, P, D+O] and context [P, P].

  Query i's problem holds the pairs j < i as context and (x_i, 0) as the query at slot i.
  """
  num_points = x.shape[0]
  eye = jnp.eye(num_points, dtype=bool)[:, :, None]
  tokens = jnp.concatenate([jnp.broadcast_to(x, (num_points,) + x.shape),
                            jnp.where(eye, 0.0, y[None])], axis=-1)
  context = jnp.tril(jnp.ones((num_points, num_points)), k=-1)
  return tokens, context


@LEARNERS.register("gd_layers")
@dataclasses.dataclass(frozen=True)
class GDLayers(Learner):
  """A linear self-attention network; `predict` gives every prefix's prediction.

  Position i is predicted by a pass whose context is the pairs before it, so a
  K-layer network holding the GD construction computes K GD steps on each prefix.
  """

  num_layers: int = 1      # LSA layers (steps of the inner loop)
  num_heads: int = 1       # heads per layer
  recurrent: bool = False  # share one layer's weights across all layers
  init_std: float = 0.02   # std of the random initial weights

  def __post_init__(self):
    for field in ("num_layers", "num_heads"):
      if getattr(self, field) < 1:
        raise ValueError(f"gd_layers {field} must be >= 1, got {getattr(self, field)}")
    if not self.init_std > 0:
      raise ValueError(f"gd_layers init_std must be > 0, got {self.init_std}")

  def _network(self) -> GDLayerNetwork:
    return GDLayerNetwork(self.num_layers, self.num_heads, self.recurrent, self.init_std)

  def init(self, rng, episode: Episode):
    tokens, context = _prefix_tokens(episode.x[0], episode.y[0])
    return self._network().init(rng, tokens[0], context[0])["params"]

  def predict(self, params, episode: Episode) -> jax.Array:
    out_dim, network = episode.y.shape[-1], self._network()

    def one_prompt(x, y):
      tokens, context = _prefix_tokens(x, y)
      final = jax.vmap(lambda t, c: network.apply({"params": params}, t, c))(tokens, context)
      return -final[jnp.arange(x.shape[0]), jnp.arange(x.shape[0]), -out_dim:]

    return jax.vmap(one_prompt)(episode.x, episode.y)

  def construct(self, dim: int, step_size: float, gamma: float = 0.0, out_dim: int = 1):
    """Params for which each layer is one GD step of size η (GD++ with γ > 0) from w = 0."""
    if self.num_heads != 1:
      raise ValueError(f"the GD construction uses one head, got num_heads={self.num_heads}")
    if not step_size > 0:
      raise ValueError(f"step_size must be > 0, got {step_size}")
    width = dim + out_dim
    x_block = np.zeros((width, width), np.float32)
    x_block[:dim, :dim] = np.eye(dim)
    value = np.zeros((width, width), np.float32)
    value[dim:, dim:] = -np.eye(out_dim)
    value[:dim, :dim] = -gamma / step_size * np.eye(dim)
    layer = {"query": x_block, "key": x_block, "value": value,
             "projection": step_size * np.eye(width, dtype=np.float32)}
    layer = {name: jnp.asarray(w)[None] for name, w in layer.items()}
    if self.recurrent:
      return {"layer": layer}
    return {f"layer_{i}": layer for i in range(self.num_layers)}
