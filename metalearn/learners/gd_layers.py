"""Linear self-attention networks in which a layer is a gradient-descent step (von Oswald et al. 2022).

Tokens are e_i = (x_i, y_i) for the context and e_q = (x_q, 0) for the query. A layer adds to
every token, for each head h,

    Δe_j = P_h W_V,h · (1/N) Σ_{i in context} e_i (W_K,h e_i)ᵀ (W_Q,h e_j),

linear attention with keys and values from the N context tokens only, no softmax and no 1/√d.
The prediction is minus the query's y entry after the last layer. With W_K = W_Q = [[I, 0], [0, 0]],
W_V = [[0, 0], [0, −I]] and P = η·I a layer is one GD step of size η on (1/2N) Σ (wᵀx_i − y_i)²
from the w the earlier layers hold (von Oswald et al., Prop. 1; their P = (η/N)·I folds the 1/N in).
GD++ also sets the x block of W_V to −(γ/η)·I, so each layer maps x ← (I − γ Σ_i x_i x_iᵀ / N) x.

Three options move the network toward a full transformer, all off by default (the constructions
need them off): LayerNorm on the tokens before each attention layer (and before the MLP), a
residual two-layer GELU MLP after each attention layer, and softmax over the context scores
in place of the linear 1/N average.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners.base import Learner
from metalearn.learners.capabilities import AttentionLayout
from metalearn.learners.registry import LEARNERS

_NAMES = ("query", "key", "value", "projection")
INITS = ("random", "gd", "gd_plus_plus")


class LinearSelfAttention(nn.Module):
  """One multi-head self-attention layer's update [tokens, width], keys/values from the context."""

  num_heads: int
  init_std: float
  softmax: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, context: jax.Array) -> jax.Array:
    width = tokens.shape[-1]
    init = nn.initializers.normal(self.init_std)
    w_q, w_k, w_v, p = (self.param(name, init, (self.num_heads, width, width)) for name in _NAMES)
    context_tokens = tokens * context[:, None]                         # [T, e], zero off context
    keys = jnp.einsum("hfe,ie->hif", w_k, context_tokens)
    queries = jnp.einsum("hfe,je->hjf", w_q, tokens)
    values = jnp.einsum("hfe,ie->hif", w_v, context_tokens)
    scores = jnp.einsum("hif,hjf->hij", keys, queries)                 # [H, context i, token j]
    if self.softmax:
      # A finite floor, not −inf: with no context every weight meets a zero value, not a NaN.
      scores = jnp.where(context[None, :, None] > 0, scores, jnp.finfo(scores.dtype).min)
      weights = jax.nn.softmax(scores, axis=1)
    else:
      weights = scores / jnp.maximum(jnp.sum(context), 1.0)
    return jnp.einsum("hgf,hif,hij->jg", p, values, weights)


class MLP(nn.Module):
  """Two dense layers with a GELU between them, back to the token width."""

  width: int
  init_std: float

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    init = nn.initializers.normal(self.init_std)
    hidden = nn.gelu(nn.Dense(self.width, kernel_init=init)(tokens))
    return nn.Dense(tokens.shape[-1], kernel_init=init)(hidden)


class GDLayerNetwork(nn.Module):
  """`num_layers` attention layers (one shared set of weights if `recurrent`) over one prompt.

  Each layer is tokens += attention(LN(tokens)), then, with an MLP, tokens += MLP(LN(tokens));
  LN is the identity unless `layer_norm`. Parameter names: layer_i (attention), norm_i,
  mlp_i, mlp_norm_i; without the index when recurrent. With the options off the tree holds
  only the attention layers, as the GD construction writes it.
  """

  num_layers: int
  num_heads: int
  recurrent: bool
  init_std: float
  layer_norm: bool = False
  mlp_width: int = 0       # 0: no MLP
  softmax: bool = False

  def _block(self, suffix: str):
    attention = LinearSelfAttention(self.num_heads, self.init_std, self.softmax,
                                    name=f"layer{suffix}")
    identity = lambda t: t
    norm = nn.LayerNorm(name=f"norm{suffix}") if self.layer_norm else identity
    mlp = MLP(self.mlp_width, self.init_std, name=f"mlp{suffix}") if self.mlp_width else None
    mlp_norm = (nn.LayerNorm(name=f"mlp_norm{suffix}") if self.layer_norm and mlp
                else identity)
    return attention, norm, mlp, mlp_norm

  @nn.compact
  def __call__(self, tokens: jax.Array, context: jax.Array) -> jax.Array:
    if self.recurrent:
      blocks = [self._block("")] * self.num_layers
    else:
      blocks = [self._block(f"_{i}") for i in range(self.num_layers)]
    for attention, norm, mlp, mlp_norm in blocks:
      tokens = tokens + attention(norm(tokens), context)
      if mlp is not None:
        tokens = tokens + mlp(mlp_norm(tokens))
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


def _context_tokens(x: jax.Array, y: jax.Array, context_points: int
                    ) -> tuple[jax.Array, jax.Array]:
  """For one prompt: the first N pairs as context tokens, then every point as a query token.

  Tokens [N + P, D+O], context mask [N + P]: von Oswald et al.'s prompt (N pairs and (x_q, 0)),
  with all P queries in one pass; in linear attention a query never sees another query.
  """
  context = jnp.concatenate([x[:context_points], y[:context_points]], axis=-1)
  queries = jnp.concatenate([x, jnp.zeros_like(y)], axis=-1)
  mask = jnp.concatenate([jnp.ones(context_points), jnp.zeros(x.shape[0])])
  return jnp.concatenate([context, queries]), mask


@LEARNERS.register("gd_layers")
@dataclasses.dataclass(frozen=True)
class GDLayers(Learner):
  """A linear self-attention network; `predict` gives every prefix's prediction.

  Position i is predicted by a pass whose context is the pairs before it, so a
  K-layer network holding the GD construction computes K GD steps on each prefix.
  With `context_points` = N the context is the first N pairs for every position (von
  Oswald et al.'s prompt of N pairs and a query): one pass per prompt instead of one per
  prefix, the setting to train in when only the query after N pairs counts.
  """

  num_layers: int = 1      # LSA layers (steps of the inner loop)
  num_heads: int = 1       # heads per layer
  recurrent: bool = False  # share one layer's weights across all layers
  init_std: float = 0.02   # std of the random initial weights
  layer_norm: bool = False  # LayerNorm on the tokens before each attention layer (and MLP)
  mlp: bool = False        # a residual GELU MLP after each attention layer
  mlp_width: int = 64      # hidden units of that MLP
  softmax: bool = False    # softmax over the context scores instead of the linear 1/N average
  init_from: str = "random"   # random | gd | gd_plus_plus: `init` returns the construction
  init_step_size: float = 1.0  # η of the construction `init` returns (init_from gd, gd_plus_plus)
  init_gamma: float = 0.0      # γ of the GD++ construction (init_from gd_plus_plus)
  context_points: int | None = None  # None: each position from the pairs before it; N: the first N

  def __post_init__(self):
    for field in ("num_layers", "num_heads", "mlp_width"):
      checks.check_int(f"gd_layers {field}", getattr(self, field), 1)
    for field in ("recurrent", "layer_norm", "mlp", "softmax"):
      checks.check_type(f"gd_layers {field}", getattr(self, field), bool)
    checks.check_positive("gd_layers init_std", self.init_std)
    checks.check_int("gd_layers context_points", self.context_points, 1, optional=True)
    checks.check_one_of("gd_layers init_from", self.init_from, INITS)
    checks.check_positive("gd_layers init_step_size", self.init_step_size)
    if self.init_from == "gd_plus_plus":
      checks.check_positive("gd_layers init_gamma", self.init_gamma)
    elif self.init_gamma != 0:
      raise ValueError(f"gd_layers init_gamma={self.init_gamma!r} is read by "
                       f"init_from='gd_plus_plus' only, got init_from={self.init_from!r}")
    if self.init_from != "random":
      self._check_constructible(f"init_from={self.init_from!r}")

  def _check_constructible(self, what: str) -> None:
    if self.num_heads != 1:
      raise ValueError(f"{what}: the GD construction uses one head, got num_heads="
                       f"{self.num_heads}")
    self._check_plain(what)

  def _check_plain(self, what: str) -> None:
    extras = self._nonlinear_options()
    if extras:
      raise ValueError(f"{what}: the GD construction is a plain linear self-attention network; "
                       f"turn off {', '.join(extras)}")

  def _nonlinear_options(self) -> tuple[str, ...]:
    return tuple(name for name in ("layer_norm", "mlp", "softmax") if getattr(self, name))

  def _layer_names(self) -> list[str]:
    """The attention layers' names in the param tree, in the order a pass applies them."""
    return ["layer"] if self.recurrent else [f"layer_{i}" for i in range(self.num_layers)]

  def attention_layout(self) -> AttentionLayout:
    """Its layers as `capabilities.LinearAttentionLayers` describes them."""
    return AttentionLayout(self.num_layers, self.recurrent, self._nonlinear_options())

  def architecture_key(self) -> "GDLayers":
    """The learner with what only `init` reads at its defaults: equal keys, and params of
    equal shapes, make the same network."""
    return dataclasses.replace(self, init_from="random", init_step_size=1.0, init_gamma=0.0,
                               init_std=0.02)

  def head_products(self, params) -> list[dict[str, jax.Array]]:
    """Per layer (`_layer_names` order), {"kq": M = W_Kᵀ W_Q, "pv": V = P W_V}, each [H, e, e]:
    all a plain layer computes with (see analysis/interpolation.py)."""
    self._check_plain("head_products")
    result = []
    for name in self._layer_names():
      if name not in params:
        raise ValueError(f"head_products: params hold no layer {name!r} (learner with "
                         f"num_layers={self.num_layers}, recurrent={self.recurrent}); "
                         f"got {sorted(params)}")
      layer = params[name]
      result.append({"kq": jnp.einsum("hfe,hfg->heg", layer["key"], layer["query"]),
                     "pv": jnp.einsum("hfg,hge->hfe", layer["projection"], layer["value"])})
    return result

  def from_head_products(self, products: list[dict[str, jax.Array]]):
    """A param tree computing exactly what `products` do: key = I, query = M, projection = I,
    value = V per head (then W_Kᵀ W_Q = M and P W_V = V)."""
    self._check_plain("from_head_products")
    names = self._layer_names()
    if len(products) != len(names):
      raise ValueError(f"from_head_products: the learner has {len(names)} layers, got products "
                       f"of {len(products)}")
    params = {}
    for name, layer in zip(names, products):
      eye = jnp.broadcast_to(jnp.eye(layer["kq"].shape[-1], dtype=layer["kq"].dtype),
                             layer["kq"].shape)
      params[name] = {"query": layer["kq"], "key": eye, "value": layer["pv"], "projection": eye}
    return params

  def _network(self) -> GDLayerNetwork:
    return GDLayerNetwork(self.num_layers, self.num_heads, self.recurrent, self.init_std,
                          self.layer_norm, self.mlp_width if self.mlp else 0, self.softmax)

  def init(self, rng, episode: Episode):
    """Random weights, or the construction of `init_from` (the train step starts from it)."""
    if self.init_from != "random":
      gamma = self.init_gamma if self.init_from == "gd_plus_plus" else 0.0
      return self.construct(episode.dim, self.init_step_size, gamma, episode.y.shape[-1])
    tokens, context = _prefix_tokens(episode.x[0], episode.y[0])
    return self._network().init(rng, tokens[0], context[0])["params"]

  def state_floats(self, params, episode: Episode) -> int:
    """Linear attention: per layer application and head, the fast weight Σ v_j k_jᵀ over the
    context (learners/context_writing.py), whatever the context's length; softmax: the keys
    and values of the context's tokens, which grow with it."""
    if not self.softmax:
      heads, key_width = params[self._layer_names()[0]]["key"].shape[:2]
      return self.num_layers * heads * key_width * key_width
    context = episode.num_points if self.context_points is None else self.context_points
    return self.kv_cache_floats(params, context)

  def kv_cache_floats(self, params, tokens: int) -> int:
    """A key and a value per token, head and layer application (heads × key width)."""
    heads, key_width = params[self._layer_names()[0]]["key"].shape[:2]
    return self.num_layers * 2 * tokens * heads * key_width

  def predict(self, params, episode: Episode) -> jax.Array:
    out_dim, network = episode.y.shape[-1], self._network()
    n = self.context_points
    if n is not None:
      if episode.num_points < n:
        raise ValueError(f"gd_layers context_points={n} needs episodes of at least {n} points, "
                         f"got {episode.num_points}")

      def fixed_context(x, y):
        tokens, context = _context_tokens(x, y, n)
        return -network.apply({"params": params}, tokens, context)[n:, -out_dim:]

      return jax.vmap(fixed_context)(episode.x, episode.y)

    def one_prompt(x, y):
      tokens, context = _prefix_tokens(x, y)
      final = jax.vmap(lambda t, c: network.apply({"params": params}, t, c))(tokens, context)
      return -final[jnp.arange(x.shape[0]), jnp.arange(x.shape[0]), -out_dim:]

    return jax.vmap(one_prompt)(episode.x, episode.y)

  def construct(self, dim: int, step_size: float, gamma: float = 0.0, out_dim: int = 1):
    """Params for which each layer is one GD step of size η (GD++ with γ > 0) from w = 0."""
    self._check_constructible("construct")
    checks.check_number("step_size", step_size, above=0, name_kind=False)
    width = dim + out_dim
    x_block = np.zeros((width, width), np.float32)
    x_block[:dim, :dim] = np.eye(dim)
    value = np.zeros((width, width), np.float32)
    value[dim:, dim:] = -np.eye(out_dim)
    value[:dim, :dim] = -gamma / step_size * np.eye(dim)
    layer = {"query": x_block, "key": x_block, "value": value,
             "projection": step_size * np.eye(width, dtype=np.float32)}
    layer = {name: jnp.asarray(w)[None] for name, w in layer.items()}
    return {name: layer for name in self._layer_names()}

  def implied_gd_plus_plus(self, params, dim: int) -> list[dict[str, float]]:
    """Per layer, the (η, γ) of the GD++ step that the layer's weights are closest to.

    With V = P·W_V and Q = W_Kᵀ·W_Q per head, a layer maps the query's y entry by
    Δy_q = V_yy·x_qᵀ Q_xxᵀ(Xᵀy/N) + (terms through V_yx) and every x by Δx = V_xx S Q_xx x
    (+ terms through V_xy), S = XᵀX/N: the x-block of V against its y-block. GD++ has
    V_yy·Q_xx = −η·I and V_xx·S·Q_xx = −γ·S, so, summed over heads, the closest scalars are

        η = −Σ_h V_yy,h · tr(Q_xx,h)/d,      γ = −Σ_h tr(V_xx,h · Q_xx,h)/d.

    These are projections on the identity (exact for isotropic blocks; the x map holds
    only the scalar part when S is close to a multiple of I, as for isotropic x). How
    far the weights are from that shape is reported beside them: `y_residual` and
    `x_residual` are ‖M − c·I‖/‖M‖ of M = −Σ_h V_yy,h·Q_xx,h and −Σ_h V_xx,h·Q_xx,h,
    and `cross` is ‖(V_xy, V_yx, Q_xy, Q_yx, Q_yy)‖ against ‖(V, Q)‖ (0 in the
    construction). For one output (out = 1).
    """
    self._check_plain("implied_gd_plus_plus")
    result = []
    for name in self._layer_names():
      layer = {k: np.asarray(v, np.float64) for k, v in params[name].items()}
      if layer["value"].shape[-1] != dim + 1:
        raise ValueError(f"implied_gd_plus_plus reads one output: width {dim + 1} expected, "
                         f"got {layer['value'].shape[-1]}")
      v = np.einsum("hfg,hge->hfe", layer["projection"], layer["value"])
      q = np.einsum("hfe,hfg->heg", layer["key"], layer["query"])     # score e_iᵀ Q e_j
      x, y = slice(0, dim), slice(dim, dim + 1)
      m_y = -np.einsum("h,hde->de", v[:, dim, dim], q[:, x, x])
      m_x = -np.einsum("hde,hef->df", v[:, x, x], q[:, x, x])
      eta, gamma = np.trace(m_y) / dim, np.trace(m_x) / dim
      residual = lambda m, c: float(np.linalg.norm(m - c * np.eye(dim))
                                    / max(np.linalg.norm(m), 1e-30))
      cross = np.sqrt(sum(np.sum(a**2) for a in (v[:, x, y], v[:, y, x], q[:, x, y],
                                                   q[:, y, x], q[:, y, y])))
      result.append({"eta": float(eta), "gamma": float(gamma),
                     "y_residual": residual(m_y, eta), "x_residual": residual(m_x, gamma),
                     "cross": float(cross / np.sqrt(np.sum(v**2) + np.sum(q**2)))})
    return result
