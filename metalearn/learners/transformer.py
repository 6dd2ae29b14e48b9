"""A GPT-2-style decoder that learns in context (Garg et al. 2022).

Two tokens per pair, the prediction for x_i read out at the first, which sees only earlier
pairs. Three layouts (`layout`):
  interleaved   x_i, then y_i zero-padded to x's width (Garg et al.);
  akyurek       [0, x_i], then [y_i, 0]: x and y in separate channels (Akyürek et al. 2022);
  concatenated  (x_i, 0), then (x_i, y_i) (von Oswald et al. 2022): the query token (x_i, 0)
                is attended to by itself alone, so every prediction reads the full pairs
                before it and its own query, in one causal pass.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners import attention as attention_lib
from metalearn.learners.base import Learner
from metalearn.learners.registry import LEARNERS

_INIT_STD = 0.02  # GPT-2's initialiser scale


LAYOUTS = ("interleaved", "akyurek", "concatenated")


def tokens_for(layout: str, x: jax.Array, y: jax.Array) -> jax.Array:
  """[B, P, D] and [B, P, O] -> tokens [B, 2P, width] in the given layout."""
  if layout == "interleaved":
    return interleave(x, y)
  zeros_x, zeros_y = jnp.zeros_like(x), jnp.zeros_like(y)
  if layout == "akyurek":
    first, second = jnp.concatenate([zeros_y, x], -1), jnp.concatenate([y, zeros_x], -1)
  else:
    first, second = jnp.concatenate([x, zeros_y], -1), jnp.concatenate([x, y], -1)
  tokens = jnp.stack([first, second], axis=2)
  return tokens.reshape(x.shape[0], 2 * x.shape[1], first.shape[-1])


def interleave(x: jax.Array, y: jax.Array) -> jax.Array:
  """[B, P, D] and [B, P, O] -> tokens [B, 2P, max(D, O)], x_i then y_i."""
  width = max(x.shape[-1], y.shape[-1])
  pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, width - a.shape[-1])))
  tokens = jnp.stack([pad(x), pad(y)], axis=2)
  return tokens.reshape(x.shape[0], 2 * x.shape[1], width)


class CausalSelfAttention(nn.Module):
  hidden: int
  num_heads: int
  out_init: nn.initializers.Initializer
  attention: str = "softmax"
  momentum: float = 0.0
  private_queries: bool = False  # the even (query) tokens are seen by themselves alone

  @nn.compact
  def __call__(self, h: jax.Array, x_only: bool = False, fast: jax.Array | None = None
               ) -> jax.Array:
    """Causal attention over [B, T, hidden]; with `x_only`, queries at even tokens only.

    `fast` [H, d, d], a context written into weights (linear attention: Σ_j v_j k_jᵀ over the
    context's tokens, learners/context_writing.py), adds F_h q to every query as if those
    tokens preceded the prompt.
    """
    batch, length, _ = h.shape
    head_dim = self.hidden // self.num_heads
    qkv = nn.Dense(3 * self.hidden, kernel_init=nn.initializers.normal(_INIT_STD), name="qkv")(h)
    q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head_dim), 3, axis=2)
    query_positions = jnp.arange(length)
    if x_only:  # only the x tokens' outputs are read out: skip the y tokens' queries
      q, query_positions = q[:, ::2], query_positions[::2]
    # Scaling q (T·d values) rather than the logits (T·T) gives the same 1/sqrt(d) attention.
    private = (jnp.arange(length) % 2 == 0) if self.private_queries else None
    # What a later query would read from these tokens, kept when the "context" collection
    # is mutable (context_writing writes it into fast weights); otherwise nothing is stored.
    self.sow("context", "keys_values", (k, v))
    q = q * (1.0 / math.sqrt(head_dim))
    out = attention_lib.causal_mix(q, k, v, query_positions, self.attention, self.momentum,
                                   private)
    if fast is not None:
      out = out + jnp.einsum("hde,bqhe->bqhd", fast, q)
    out = out.reshape(batch, q.shape[1], self.hidden)
    return nn.Dense(self.hidden, kernel_init=self.out_init, name="out")(out)


class Block(nn.Module):
  """Pre-LayerNorm block: causal attention, then a 4x GELU MLP, each residual."""

  hidden: int
  num_heads: int
  mlp_ratio: int
  out_init: nn.initializers.Initializer
  attention: str
  momentum: float
  private_queries: bool

  @nn.compact
  def __call__(self, h: jax.Array, x_only: bool = False, fast: jax.Array | None = None
               ) -> jax.Array:
    a = CausalSelfAttention(self.hidden, self.num_heads, self.out_init, self.attention,
                            self.momentum, self.private_queries, name="attn")(
        nn.LayerNorm(epsilon=1e-5, name="ln_attn")(h), x_only, fast)
    # Every sublayer after attention works token by token: with `x_only` (the last block),
    # the y tokens, whose outputs nothing reads, are dropped here.
    # What the attention sublayer adds at the x tokens (Dai et al. 2022 compare its change).
    self.sow("intermediates", "attention_output", a if x_only else a[:, ::2])
    h = (h[:, ::2] if x_only else h) + a
    m = nn.LayerNorm(epsilon=1e-5, name="ln_mlp")(h)
    m = nn.Dense(self.mlp_ratio * self.hidden, kernel_init=nn.initializers.normal(_INIT_STD),
                 name="mlp_in")(m)
    m = nn.Dense(self.hidden, kernel_init=self.out_init, name="mlp_out")(nn.gelu(m))
    return h + m


class Decoder(nn.Module):
  hidden: int
  num_layers: int
  num_heads: int
  mlp_ratio: int
  max_tokens: int
  out_dim: int
  attention: str
  momentum: float
  private_queries: bool

  @nn.compact
  def __call__(self, tokens: jax.Array, fast: list[jax.Array] | None = None,
               first_position: int = 0) -> jax.Array:
    """Predictions at the x tokens of `tokens` [B, T, width], placed at positions
    first_position .. first_position + T − 1; `fast`, per block, a written context."""
    init = nn.initializers.normal(_INIT_STD)
    # GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 * layers).
    out_init = nn.initializers.normal(_INIT_STD / math.sqrt(2 * self.num_layers))
    positions = self.param("positions", init, (self.max_tokens, self.hidden))
    h = nn.Dense(self.hidden, kernel_init=init, name="read_in")(tokens)
    h = h + positions[first_position: first_position + tokens.shape[1]]
    # The residual stream at the x tokens, after the embedding and after every block (probing).
    self.sow("intermediates", "residual", h[:, ::2])
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      h = Block(self.hidden, self.num_heads, self.mlp_ratio, out_init, self.attention,
                self.momentum, self.private_queries, name=f"block_{i}")(
          h, last, None if fast is None else fast[i])
      self.sow("intermediates", "residual", h if last else h[:, ::2])
    h = nn.LayerNorm(epsilon=1e-5, name="ln_final")(h)  # [B, P, hidden]: the x tokens
    return nn.Dense(self.out_dim, kernel_init=init, name="read_out")(h)


@LEARNERS.register("transformer")
@dataclasses.dataclass(frozen=True)
class Transformer(Learner):
  """In-context learner: the inner loop is the forward pass (emergent)."""

  hidden: int = 64       # width of the residual stream
  num_layers: int = 3    # number of decoder blocks
  num_heads: int = 2     # attention heads per block
  mlp_ratio: int = 4     # MLP width as a multiple of `hidden`
  max_points: int = 41   # longest prompt (in (x, y) pairs) the position table covers
  attention: str = "softmax"  # softmax | linear | relu | momentum (see attention.py)
  momentum: float = 0.9  # η of momentum attention's decayed sum of past values
  layout: str = "interleaved"  # interleaved | akyurek | concatenated (see the module docstring)

  def __post_init__(self):
    for field in ("hidden", "num_layers", "num_heads", "mlp_ratio", "max_points"):
      checks.check_int(f"transformer {field}", getattr(self, field), 1, name_kind=False)
    attention_lib.check_kind(self.attention, self.momentum)
    checks.check_one_of("transformer layout", self.layout, LAYOUTS)
    if self.hidden % self.num_heads:
      raise ValueError(f"transformer hidden={self.hidden} is not divisible by "
                       f"num_heads={self.num_heads}")

  def decoder(self, out_dim: int) -> Decoder:
    """The flax module behind `predict`, for `out_dim` outputs."""
    return Decoder(self.hidden, self.num_layers, self.num_heads, self.mlp_ratio,
                   2 * self.max_points, out_dim, self.attention, self.momentum,
                   self.layout == "concatenated")

  def token_width(self, dim: int, out_dim: int) -> int:
    """Width of the tokens this layout makes from x [.., dim] and y [.., out_dim]."""
    return max(dim, out_dim) if self.layout == "interleaved" else dim + out_dim

  def check_episode(self, num_points: int, dim: int) -> None:
    if num_points > self.max_points:
      raise ValueError(f"prompts of {num_points} points do not fit the transformer's "
                       f"max_points={self.max_points}; allowed: at most {self.max_points}")

  def init(self, rng, episode: Episode):
    self.check_episode(episode.num_points, episode.dim)
    tokens = tokens_for(self.layout, episode.x, episode.y)
    return self.decoder(episode.y.shape[-1]).init(rng, tokens)["params"]

  def predict(self, params, episode: Episode) -> jax.Array:
    self.check_episode(episode.num_points, episode.dim)
    out_dim = params["read_out"]["kernel"].shape[-1]
    tokens = tokens_for(self.layout, episode.x, episode.y)
    return self.decoder(out_dim).apply({"params": params}, tokens)

  def intermediate_names(self) -> tuple[str, ...]:
    """What `intermediates` returns (capabilities.HiddenStates)."""
    return ("residual", "attention_output")

  def intermediates(self, params, episode: Episode) -> dict[str, jax.Array]:
    """What the pass computes at the x tokens (where the prediction for x_i is read):

      residual          [layers + 1, batch, points, hidden]: the residual stream after the
                        embedding (0) and after each block (1..layers);
      attention_output  [layers, batch, points, hidden]: each block's attention sublayer output.
    """
    self.check_episode(episode.num_points, episode.dim)
    out_dim = params["read_out"]["kernel"].shape[-1]
    tokens = tokens_for(self.layout, episode.x, episode.y)
    _, state = self.decoder(out_dim).apply({"params": params}, tokens,
                                           mutable=["intermediates"])
    found = state["intermediates"]
    return {"residual": jnp.stack(found["residual"]),
            "attention_output": jnp.stack([found[f"block_{i}"]["attention_output"][0]
                                           for i in range(self.num_layers)])}
