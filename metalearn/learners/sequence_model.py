"""Recurrent in-context learners: a stack of state-carrying layers over the prompt's tokens.

The prompt is read as the transformer reads it (`transformer.tokens_for`): two tokens per pair,
the prediction for x_i read at x_i's token, after the state has taken in every earlier pair and
nothing later. Unlike the transformer's, the memory of the context is a state of fixed size,
whatever the prompt's length (Kirsch et al. 2022 found that size, not the parameter count,
limiting in-context learning). Each layer is pre-norm and residual, h ← h + layer(norm(h)), so
the stacks differ only in the layer: an LSTM or GRU cell under a scan (recurrent.py), a
selective state-space layer (selective_ssm.py).

Layouts: interleaved and akyurek. The concatenated layout's query token (x_i, 0) must be seen by
itself alone, which a state that takes in every token cannot do; it is refused.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners.base import Learner, Params
from metalearn.learners.transformer import tokens_for

RECURRENT_LAYOUTS = ("interleaved", "akyurek")


class SequenceStack(nn.Module):
  """read-in, `num_layers` residual layers from `make_layer(index)`, a final norm, read-out."""

  hidden: int
  num_layers: int
  out_dim: int
  make_layer: Callable[[int], nn.Module]

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, T, width] -> predictions [B, T // 2, out] at the x tokens."""
    h = nn.Dense(self.hidden, name="read_in")(tokens)
    for i in range(self.num_layers):
      h = h + self.make_layer(i)(nn.LayerNorm(epsilon=1e-5, name=f"norm_{i}")(h))
    h = nn.LayerNorm(epsilon=1e-5, name="norm_final")(h[:, ::2])
    return nn.Dense(self.out_dim, name="read_out")(h)


@dataclasses.dataclass(frozen=True)
class SequenceLearner(Learner):
  """What every recurrent learner shares; a subclass gives its layer and its state size."""

  hidden: int = 64              # width of the residual stream
  num_layers: int = 2           # layers stacked
  layout: str = "interleaved"   # interleaved | akyurek (module docstring)

  def __post_init__(self):
    kind = type(self).__name__
    for field in ("hidden", "num_layers"):
      checks.check_int(f"{kind} {field}", getattr(self, field), 1, name_kind=False)
    if self.layout not in RECURRENT_LAYOUTS:
      raise ValueError(f"{kind} layout {self.layout!r}: a recurrent state takes in every "
                       f"token, so it cannot read the concatenated layout; allowed: "
                       f"{', '.join(RECURRENT_LAYOUTS)}")

  def layer(self, index: int) -> nn.Module:
    """Layer `index` of the stack: [B, T, hidden] -> [B, T, hidden], causal."""
    raise NotImplementedError

  def state_floats(self, params: Params, episode: Episode) -> int:
    """The floats carried per prompt from one token to the next, whatever the prompt's length."""
    raise NotImplementedError

  def stack(self, out_dim: int) -> SequenceStack:
    return SequenceStack(self.hidden, self.num_layers, out_dim, self.layer)

  def init(self, rng: jax.Array, episode: Episode) -> Params:
    tokens = tokens_for(self.layout, episode.x, episode.y)
    return self.stack(episode.y.shape[-1]).init(rng, tokens)["params"]

  def predict(self, params: Params, episode: Episode) -> jax.Array:
    out_dim = params["read_out"]["kernel"].shape[-1]
    tokens = tokens_for(self.layout, episode.x, episode.y)
    return self.stack(out_dim).apply({"params": params}, tokens)


def linear_recurrence(a: jax.Array, b: jax.Array, parallel: bool = True) -> jax.Array:
  """h_t = a_t ⊙ h_{t−1} + b_t from h_{−1} = 0 over axis 1 of a, b [B, T, ...].

  parallel: by associative scan (log-depth; (a₁, b₁) then (a₂, b₂) composes to
  (a₁a₂, a₂b₁ + b₂)); otherwise step by step, the reference the tests hold it equal to.
  """
  if parallel:
    def combine(first, second):
      (a1, b1), (a2, b2) = first, second
      return a1 * a2, a2 * b1 + b2

    return jax.lax.associative_scan(combine, (a, b), axis=1)[1]

  def step(h, ab):
    h = ab[0] * h + ab[1]
    return h, h

  _, hs = jax.lax.scan(step, jnp.zeros_like(b[:, 0]),
                       (jnp.moveaxis(a, 1, 0), jnp.moveaxis(b, 1, 0)))
  return jnp.moveaxis(hs, 0, 1)
