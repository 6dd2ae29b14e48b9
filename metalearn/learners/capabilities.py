"""What a learner can do beyond `init` and `predict`, declared so that an analysis asks for it.

Every learner has `init`, `predict` and the methods of `base.Learner` (its evaluation variants,
its training terms, its episode checks). The capabilities here are those only some learners
have. Each is a `typing.Protocol`: a learner has it by defining its methods (no registration),
and an analysis checks `isinstance(learner, Capability)` and refuses a learner without it,
naming what is missing, instead of testing for a concrete class or an attribute.
"""

import dataclasses
from typing import Hashable, Protocol, runtime_checkable

import jax

from metalearn.core.episode import Episode
from metalearn.learners.base import Params


@runtime_checkable
class HiddenStates(Protocol):
  """A learner whose pass exposes what it computes at the x tokens, where the prediction for
  x_i is read (the transformer). Probing reads its residual stream (Akyürek et al. 2022), the
  ICL-vs-fine-tuning measure its attention outputs (Dai et al. 2022)."""

  def intermediate_names(self) -> tuple[str, ...]:
    """The names `intermediates` returns: "residual" (the residual stream after the embedding
    and after each block), "attention_output" (each attention sublayer's output), ..."""

  def intermediates(self, params: Params, episode: Episode) -> dict[str, jax.Array]:
    """By name, [layers (+ 1 for the embedding), batch, points, hidden] at the x tokens."""


@runtime_checkable
class PredictsQueries(Protocol):
  """A learner that fits a context once and then predicts any number of queries from it (least
  squares, ridge). The implicit-weights analysis asks it for its probes' predictions instead
  of running one prompt per probe, each solving every prefix when only the last counts."""

  def predict_queries(self, params: Params, context: Episode, query_x: jax.Array) -> jax.Array:
    """[B, M, O]: each prompt's queries [B, M, D] predicted from all of context's pairs."""


def exposes(learner: object, name: str) -> bool:
  """Whether the learner's hidden states include `name` (e.g. "residual")."""
  return isinstance(learner, HiddenStates) and name in learner.intermediate_names()


@dataclasses.dataclass(frozen=True)
class AttentionLayout:
  """How a stack of self-attention layers is laid out (`LinearAttentionLayers`)."""

  depth: int          # layers one pass applies: the GD steps a construction can hold
  weight_tied: bool   # one set of weights applied `depth` times
  # The options that make a layer more than bilinear in its heads' (M, V) products (the
  # symmetry and the GD construction need none of them); () for a plain network.
  nonlinear_options: tuple[str, ...]


@runtime_checkable
class LinearAttentionLayers(Protocol):
  """Self-attention layers in which, plain, head h of a layer adds V_h S M_h e_j to token j,
  S = (1/N) Σ_i e_i e_iᵀ over the context, M_h = W_K,hᵀ W_Q,h and V_h = P_h W_V,h (von Oswald
  et al. 2022; the gd_layers learner). Interpolation works in the (M, V) products, the GD-layer
  report reads the GD++ step the weights hold."""

  def attention_layout(self) -> AttentionLayout:
    """Its depth, weight tying and the options that break the bilinear form."""

  def head_products(self, params: Params) -> list[dict[str, jax.Array]]:
    """Per layer, {"kq": M [H, e, e], "pv": V [H, e, e]}: all a plain layer computes with."""

  def from_head_products(self, products: list[dict[str, jax.Array]]) -> Params:
    """A param tree computing exactly what `products` do."""

  def architecture_key(self) -> Hashable:
    """Equal for two learners that compute the same function of the same params (what only
    `init` reads is left out)."""

  def implied_gd_plus_plus(self, params: Params, dim: int) -> list[dict[str, float]]:
    """Per layer, the (η, γ) of the GD++ step the layer's weights are closest to."""
