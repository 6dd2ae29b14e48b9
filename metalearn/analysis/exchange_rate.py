"""What in-context learning is worth in training steps: the exchange rate between context and
training.

For k examples of a new task, a learner that reads them in context reaches some error on fresh
queries of that task. Fine-tuning weights on the same k examples (and then predicting with no
context) reaches an error that falls with its optimizer steps s. The exchange rate at k is the
fewest steps whose error matches the in-context one (`fewest_steps`); what it costs, counted in
FLOPs from the model's shapes, against re-reading the k examples with every later query, gives
the number of queries after which fine-tuning once is the cheaper route (`break_even_queries`).

What is fine-tuned is an `Adaptable`: its starting weights and its zero-shot prediction. A
trained transformer's (all weights, chosen ones or LoRA: `transformer_adaptable` over a
fine_tuning.Trainable), or a linear model from w = 0 (`linear_model`), the closed-form anchor:
a one-layer GD-layer network under the GD construction with step η predicts in context what one
SGD step of size η on the same examples gives the linear model (the exchange rate is one step).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.learners.base import Params
from metalearn.learners.fine_tuning import Trainable, descend, zero_shot
from metalearn.learners.transformer import Transformer

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # per point, as metalearn.core.losses


class Adaptable(NamedTuple):
  """What fine-tuning moves: `start`, the leaves; `predict(leaves, x [Q, D]) -> [Q, O]`, the
  prediction with no context; `grad_mask`, None or 0/1 leaves that freeze weights."""

  start: Params
  predict: Callable[[Params, jax.Array], jax.Array]
  grad_mask: Params | None = None


def transformer_adaptable(transformer: Transformer, trainable: Trainable) -> Adaptable:
  """A transformer's fine-tuning (all weights, a selection or LoRA), predicting zero-shot."""
  return Adaptable(trainable.start,
                   lambda leaves, x: zero_shot(transformer, trainable.to_weights(leaves), x),
                   trainable.grad_mask)


def linear_model(dim: int, out_dim: int = 1) -> Adaptable:
  """ŷ = xᵀw from w = 0: what one GD step of a GD-layer construction is written in."""
  return Adaptable(jnp.zeros((dim, out_dim), jnp.float32), lambda w, x: x @ w)


def tracked_descent(adaptable: Adaptable, objective: Callable[[Params], jax.Array],
                    observe: Callable[[Params], Any], *, steps: int,
                    optimizer: optax.GradientTransformation) -> Any:
  """`observe(leaves)` before and after each of `steps` optimizer steps (fresh state) down
  `objective` from the adaptable's start, stacked: [steps + 1, ...] per observed leaf."""
  _, later = descend(objective, adaptable.start, adaptable.grad_mask, steps=steps,
                     optimizer=optimizer, observe=observe)
  return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]),
                      observe(adaptable.start), later)


def errors_by_step(adaptable: Adaptable, x_context: jax.Array, y_context: jax.Array,
                   x_query: jax.Array, y_query: jax.Array, *, steps: int,
                   optimizer: optax.GradientTransformation, loss: Loss) -> jax.Array:
  """[steps + 1]: the mean query loss after s = 0 .. steps optimizer steps (fresh state) on the
  mean `loss` of the context pairs' predictions (x_context [k, D], y_context [k, O]), the
  queries (x_query [Q, D], y_query [Q, O]) predicted with no context."""
  def query_error(leaves):
    return jnp.mean(loss(adaptable.predict(leaves, x_query), y_query))

  def context_loss(leaves):
    return jnp.mean(loss(adaptable.predict(leaves, x_context), y_context))

  return tracked_descent(adaptable, context_loss, query_error, steps=steps, optimizer=optimizer)


def fewest_steps(in_context_error: float, errors: np.ndarray, rtol: float = 0.0) -> int | None:
  """The fewest steps s whose error is at most the in-context error (times 1 + rtol); None: not
  within the budget of len(errors) - 1 steps."""
  reached = np.flatnonzero(np.asarray(errors) <= in_context_error * (1.0 + rtol))
  return int(reached[0]) if reached.size else None


def transformer_forward_flops(hidden: int, layers: int, dim: int, out: int, points: int) -> float:
  """Model FLOPs of one forward pass over a prompt of `points` pairs (2 tokens each).

  2 · (weights in matmuls) · tokens + layers · 2 · 2 · T² · hidden, with T = 2·points tokens,
  weights in matmuls = dim·hidden (read-in) + 12·hidden²·layers (qkv 3h², out h², MLP 8h²) and the
  read-out hidden·out at the `points` x tokens; the attention term is QKᵀ and AV over the full
  T×T square. Biases, LayerNorm, softmax and GELU are left out (well under 1%).
  """
  tokens = 2 * points
  matmul = 2 * (tokens * (dim * hidden + 12 * hidden**2 * layers) + points * hidden * out)
  return float(matmul + 2 * 2 * tokens**2 * hidden * layers)


def fine_tuning_flops(forward_one_point: float, examples: int, steps: int) -> float:
  """`steps` steps on `examples` one-point prompts: forward and backward (2x forward) each."""
  return 3.0 * forward_one_point * examples * steps


def break_even_queries(fine_tune_flops: float, in_context_query_flops: float,
                       zero_shot_query_flops: float) -> float:
  """The number of later queries after which fine-tuning once (then predicting zero-shot) costs
  fewer FLOPs than answering each query with the k examples re-read in its prompt; inf when
  reading the context costs nothing extra."""
  extra = in_context_query_flops - zero_shot_query_flops
  return fine_tune_flops / extra if extra > 0 else float("inf")
