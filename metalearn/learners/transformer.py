"""A GPT-2-style decoder that learns in context (Garg et al. 2022).

Two tokens per pair, the prediction for x_i read out at the first, which sees only earlier
pairs. Three layouts (`layout`):
  interleaved   x_i, then y_i zero-padded to x's width (Garg et al.);
  akyurek       [0, x_i], then [y_i, 0]: x and y in separate channels (Akyürek et al. 2022);
  concatenated  (x_i, 0), then (x_i, y_i) (von Oswald et al. 2022): the query token (x_i, 0)
                is attended to by itself alone, so every prediction reads the full pairs
                before it and its own query, in one causal pass.

Three choices of the block, each defaulting to GPT-2's (the shipped runs' parameters and ops):
  positions  learned (a table of 2·max_points rows added to the tokens) | rotary (q and k of each
             head rotated by their positions, learners/rotary.py; no table, so no length limit) |
             none (no positional information but the causal mask's);
  norm       layernorm | rmsnorm (Zhang & Sennrich 2019: x / sqrt(mean(x²) + ε) · scale, no
             centring, no bias), for every norm of the blocks and the final one;
  mlp        gelu (GPT-2's) | swiglu (Shazeer 2020: out(silu(x W_gate) ⊙ x W_up)).
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners import attention as attention_lib
from metalearn.learners import rotary as rotary_lib
from metalearn.learners.base import Learner
from metalearn.learners.registry import LEARNERS

_INIT_STD = 0.02  # GPT-2's initialiser scale


LAYOUTS = ("interleaved", "akyurek", "concatenated")
POSITIONS = ("learned", "rotary", "none")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
LINEAR_PASSES = ("parallel", "recurrent")
_NORM_EPSILON = 1e-5  # GPT-2's LayerNorm epsilon, kept for RMSNorm (flax's default is 1e-6)


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


def norm_layer(kind: str, name: str) -> nn.Module:
  """The block's normalisation: LayerNorm, or RMSNorm (scale only), both with epsilon 1e-5.

  Both keep the names ln_* (so that weights chosen by name, for fine-tuning or LoRA, are the
  same ones whichever norm a run uses).
  """
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=_NORM_EPSILON, name=name)
  return nn.LayerNorm(epsilon=_NORM_EPSILON, name=name)


class CausalSelfAttention(nn.Module):
  hidden: int
  num_heads: int
  out_init: nn.initializers.Initializer
  attention: str = "softmax"
  momentum: float = 0.0
  private_queries: bool = False  # the even (query) tokens are seen by themselves alone
  rotary: bool = False           # rotate q and k by their positions (learners/rotary.py)
  rotary_dims: int | None = None  # how many of each head's dimensions rotate; None: all
  recurrent: bool = False        # linear attention token by token (attention.linear_recurrent_mix)

  @nn.compact
  def __call__(self, h: jax.Array, x_only: bool = False, fast: jax.Array | None = None,
               first_position: int = 0) -> jax.Array:
    """Causal attention over [B, T, hidden]; with `x_only`, queries at even tokens only.

    `fast` [H, d, d], a context written into weights (linear attention: Σ_j v_j k_jᵀ over the
    context's tokens, learners/context_writing.py), adds F_h q to every query as if those
    tokens preceded the prompt. With `rotary`, the tokens sit at positions first_position ..
    first_position + T − 1 (after the written context's), and the keys sown and the queries
    read through `fast` are the rotated ones, so that F_h q is still their part of q·k.
    """
    batch, length, _ = h.shape
    head_dim = self.hidden // self.num_heads
    qkv = nn.Dense(3 * self.hidden, kernel_init=nn.initializers.normal(_INIT_STD), name="qkv")(h)
    q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head_dim), 3, axis=2)
    query_positions = jnp.arange(length)
    if x_only:  # only the x tokens' outputs are read out: skip the y tokens' queries
      q, query_positions = q[:, ::2], query_positions[::2]
    if self.rotary:  # before the keys are sown: a written context holds rotated keys
      q = rotary_lib.rotate(q, first_position + query_positions, self.rotary_dims)
      k = rotary_lib.rotate(k, first_position + jnp.arange(length), self.rotary_dims)
    # Scaling q (T·d values) rather than the logits (T·T) gives the same 1/sqrt(d) attention.
    private = (jnp.arange(length) % 2 == 0) if self.private_queries else None
    # What a later query would read from these tokens, kept when the "context" collection
    # is mutable (context_writing writes it into fast weights); otherwise nothing is stored.
    self.sow("context", "keys_values", (k, v))
    q = q * (1.0 / math.sqrt(head_dim))
    if self.recurrent:
      out = attention_lib.linear_recurrent_mix(q, k, v, query_positions, private)
    else:
      out = attention_lib.causal_mix(q, k, v, query_positions, self.attention, self.momentum,
                                     private)
    if fast is not None:
      out = out + jnp.einsum("hde,bqhe->bqhd", fast, q)
    out = out.reshape(batch, q.shape[1], self.hidden)
    return nn.Dense(self.hidden, kernel_init=self.out_init, name="out")(out)


class Block(nn.Module):
  """Pre-norm block: causal attention, then an MLP of mlp_ratio x hidden, each residual."""

  hidden: int
  num_heads: int
  mlp_ratio: int
  out_init: nn.initializers.Initializer
  attention: str
  momentum: float
  private_queries: bool
  rotary: bool = False
  rotary_dims: int | None = None
  norm: str = "layernorm"  # layernorm | rmsnorm
  mlp: str = "gelu"        # gelu | swiglu
  recurrent: bool = False  # linear attention in its recurrent form

  @nn.compact
  def __call__(self, h: jax.Array, x_only: bool = False, fast: jax.Array | None = None,
               first_position: int = 0) -> jax.Array:
    a = CausalSelfAttention(self.hidden, self.num_heads, self.out_init, self.attention,
                            self.momentum, self.private_queries, self.rotary, self.rotary_dims,
                            self.recurrent, name="attn")(
        norm_layer(self.norm, "ln_attn")(h), x_only, fast, first_position)
    # Every sublayer after attention works token by token: with `x_only` (the last block),
    # the y tokens, whose outputs nothing reads, are dropped here.
    # What the attention sublayer adds at the x tokens (Dai et al. 2022 compare its change).
    self.sow("intermediates", "attention_output", a if x_only else a[:, ::2])
    h = (h[:, ::2] if x_only else h) + a
    m = norm_layer(self.norm, "ln_mlp")(h)
    width, init = self.mlp_ratio * self.hidden, nn.initializers.normal(_INIT_STD)
    if self.mlp == "swiglu":
      # Gate and value both mlp_ratio·hidden wide, as GELU's hidden layer: mlp_ratio keeps
      # meaning the MLP's width (1.5x GELU's weights; Shazeer shrinks it to 2/3 to match those).
      # No biases, as in Shazeer's FFN_SwiGLU (and LLaMA's).
      gate = nn.Dense(width, use_bias=False, kernel_init=init, name="mlp_gate")(m)
      up = nn.Dense(width, use_bias=False, kernel_init=init, name="mlp_up")(m)
      m = nn.Dense(self.hidden, use_bias=False, kernel_init=self.out_init,
                   name="mlp_out")(nn.silu(gate) * up)
    else:
      m = nn.Dense(width, kernel_init=init, name="mlp_in")(m)
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
  positions: str = "learned"  # learned | rotary | none
  rotary_dims: int | None = None
  norm: str = "layernorm"
  mlp: str = "gelu"
  recurrent: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, fast: list[jax.Array] | None = None,
               first_position: int = 0) -> jax.Array:
    """Predictions at the x tokens of `tokens` [B, T, width], placed at positions
    first_position .. first_position + T − 1; `fast`, per block, a written context."""
    init = nn.initializers.normal(_INIT_STD)
    # GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 * layers).
    out_init = nn.initializers.normal(_INIT_STD / math.sqrt(2 * self.num_layers))
    # Rotary positions act inside attention, and "none" has none: only "learned" has a table.
    table = (self.param("positions", init, (self.max_tokens, self.hidden))
             if self.positions == "learned" else None)
    h = nn.Dense(self.hidden, kernel_init=init, name="read_in")(tokens)
    if table is not None:
      h = h + table[first_position: first_position + tokens.shape[1]]
    # The residual stream at the x tokens, after the embedding and after every block (probing).
    self.sow("intermediates", "residual", h[:, ::2])
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      h = Block(self.hidden, self.num_heads, self.mlp_ratio, out_init, self.attention,
                self.momentum, self.private_queries, self.positions == "rotary",
                self.rotary_dims, self.norm, self.mlp, self.recurrent, name=f"block_{i}")(
          h, last, None if fast is None else fast[i], first_position)
      self.sow("intermediates", "residual", h if last else h[:, ::2])
    h = norm_layer(self.norm, "ln_final")(h)  # [B, P, hidden]: the x tokens
    return nn.Dense(self.out_dim, kernel_init=init, name="read_out")(h)


@LEARNERS.register("transformer")
@dataclasses.dataclass(frozen=True)
class Transformer(Learner):
  """In-context learner: the inner loop is the forward pass (emergent)."""

  hidden: int = 64       # width of the residual stream
  num_layers: int = 3    # number of decoder blocks
  num_heads: int = 2     # attention heads per block
  mlp_ratio: int = 4     # MLP width as a multiple of `hidden`
  # Longest prompt (in (x, y) pairs) the learned position table covers: it bounds prompts with
  # positions="learned" alone (rotary and none have no table, and take prompts of any length).
  max_points: int = 41
  attention: str = "softmax"  # softmax | linear | relu | momentum (see attention.py)
  momentum: float = 0.9  # η of momentum attention's decayed sum of past values
  layout: str = "interleaved"  # interleaved | akyurek | concatenated (see the module docstring)
  positions: str = "learned"  # learned | rotary | none (see the module docstring)
  rotary_dims: int | None = None  # rotary: each head's dimensions rotated (even); None: all
  norm: str = "layernorm"  # layernorm | rmsnorm
  mlp: str = "gelu"        # gelu | swiglu
  # parallel | recurrent: linear attention as one T×T product, or token by token with a
  # fast-weight state per head (the same function; recurrent with positions rotary or none is
  # an RNN whose state does not grow with the prompt).
  linear_pass: str = "parallel"

  def __post_init__(self):
    for field in ("hidden", "num_layers", "num_heads", "mlp_ratio", "max_points"):
      checks.check_int(f"transformer {field}", getattr(self, field), 1, name_kind=False)
    attention_lib.check_kind(self.attention, self.momentum)
    checks.check_one_of("transformer layout", self.layout, LAYOUTS)
    checks.check_one_of("transformer positions", self.positions, POSITIONS)
    checks.check_one_of("transformer norm", self.norm, NORMS)
    checks.check_one_of("transformer mlp", self.mlp, MLPS)
    checks.check_one_of("transformer linear_pass", self.linear_pass, LINEAR_PASSES)
    if self.linear_pass == "recurrent" and self.attention != "linear":
      raise ValueError(f"transformer linear_pass='recurrent' runs linear attention token by "
                       f"token; got attention={self.attention!r}; allowed: attention='linear'")
    if self.hidden % self.num_heads:
      raise ValueError(f"transformer hidden={self.hidden} is not divisible by "
                       f"num_heads={self.num_heads}")
    self._check_rotary_dims()

  def _check_rotary_dims(self) -> None:
    if self.rotary_dims is None:
      return
    if self.positions != "rotary":
      raise ValueError(f"transformer rotary_dims={self.rotary_dims!r} is for "
                       f"positions='rotary' only, got positions={self.positions!r}; allowed: "
                       "rotary_dims=None")
    head_dim = self.hidden // self.num_heads
    checks.check_int("transformer rotary_dims", self.rotary_dims, 1, optional=True)
    if self.rotary_dims % 2 or head_dim % self.rotary_dims:
      raise ValueError(f"transformer rotary_dims must be None or a positive even integer that "
                       f"divides the head size hidden // num_heads = {head_dim}, got "
                       f"{self.rotary_dims}")

  def decoder(self, out_dim: int) -> Decoder:
    """The flax module behind `predict`, for `out_dim` outputs."""
    return Decoder(self.hidden, self.num_layers, self.num_heads, self.mlp_ratio,
                   2 * self.max_points, out_dim, self.attention, self.momentum,
                   self.layout == "concatenated", positions=self.positions,
                   rotary_dims=self.rotary_dims, norm=self.norm, mlp=self.mlp,
                   recurrent=self.linear_pass == "recurrent")

  def token_width(self, dim: int, out_dim: int) -> int:
    """Width of the tokens this layout makes from x [.., dim] and y [.., out_dim]."""
    return max(dim, out_dim) if self.layout == "interleaved" else dim + out_dim

  def check_episode(self, num_points: int, dim: int) -> None:
    if self.positions == "learned" and num_points > self.max_points:
      raise ValueError(f"prompts of {num_points} points do not fit the transformer's "
                       f"max_points={self.max_points}; allowed: at most {self.max_points}")

  def state_floats(self, params, episode: Episode) -> int:
    """Linear attention: per block and head the fast weight Σ v kᵀ, head_dim² floats, whatever
    the prompt's length (its recurrent pass carries exactly that). Otherwise the keys and
    values of the prompt's tokens that later queries read, 2·hidden per token and block (in
    the concatenated layout only the (x_i, y_i) tokens), and momentum's decayed sum of values."""
    head_dim = self.hidden // self.num_heads
    if self.attention == "linear":
      return self.num_layers * self.num_heads * head_dim * head_dim
    tokens = episode.num_points * (1 if self.layout == "concatenated" else 2)
    cache = self.kv_cache_floats(params, tokens)
    return cache + (self.num_layers * self.hidden if self.attention == "momentum" else 0)

  def kv_cache_floats(self, params, tokens: int) -> int:
    """A key and a value, hidden wide, per token in every block."""
    return self.num_layers * 2 * tokens * self.hidden

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
