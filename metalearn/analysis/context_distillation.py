"""Distilling a context into low-rank adapters, where attention has no exact weight update.

Softmax attention's effect on a later query is not a weight update (learners/context_writing.py
writes the linear-attention case exactly). Its context can still be moved into weights by
learning from the model's own forward passes: for one prompt's first k pairs, the teacher is the
model reading them, asked at M fresh inputs of the task (their labels are never drawn on); the
student is the same model with no context and LoRA adapters of rank r, trained so that its
zero-shot predictions at those inputs match the teacher's (squared error on the outputs). No
label beyond the context's own is used. Beside it, the same adapters fine-tuned on the k context
labels (the exchange rate's route). Both are scored after every step at the prompt's remaining
points: the gap to the in-context predictions there, and the task error.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.analysis.exchange_rate import Adaptable, tracked_descent, transformer_adaptable
from metalearn.analysis.exchange_grid import check_grid
from metalearn.analysis.implicit_weights import probe_episodes
from metalearn.core import losses
from metalearn.core.episode import Episode
from metalearn.evaluation.prompts import query_episodes
from metalearn.learners.base import Params
from metalearn.learners.context_writing import predict_written, write_context
from metalearn.learners.fine_tuning import lora
from metalearn.learners.transformer import Transformer

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # per point, as metalearn.core.losses
TRAINED_ON = {"distilled": "in-context predictions at fresh inputs",
              "labels": "the k context labels"}


def distillation_curves(adaptable: Adaptable, x_context: jax.Array, y_context: jax.Array,
                        x_fresh: jax.Array, teacher_fresh: jax.Array, x_query: jax.Array,
                        icl_query: jax.Array, y_query: jax.Array, *, steps: int,
                        optimizer: optax.GradientTransformation, loss: Loss
                        ) -> dict[str, dict[str, jax.Array]]:
  """One prompt's curves, {"distilled" | "labels": {"gap" | "error": [steps + 1]}}.

  "distilled" descends the mean squared error of the zero-shot predictions at x_fresh [M, D]
  to the teacher's teacher_fresh [M, O]; "labels" the mean `loss` at the context pairs
  (x_context [k, D], y_context [k, O]). After each step s = 0 .. steps: "gap", the mean squared
  error to the in-context predictions icl_query [Q, O] at x_query [Q, D]; "error", the mean
  `loss` against y_query [Q, O].
  """
  def scores(leaves: Params) -> dict[str, jax.Array]:
    y_hat = adaptable.predict(leaves, x_query)
    return {"gap": jnp.mean(losses.squared_error(y_hat, icl_query)),
            "error": jnp.mean(loss(y_hat, y_query))}

  def match_teacher(leaves: Params) -> jax.Array:
    return jnp.mean(losses.squared_error(adaptable.predict(leaves, x_fresh), teacher_fresh))

  def fit_labels(leaves: Params) -> jax.Array:
    return jnp.mean(loss(adaptable.predict(leaves, x_context), y_context))

  return {name: tracked_descent(adaptable, objective, scores, steps=steps, optimizer=optimizer)
          for name, objective in (("distilled", match_teacher), ("labels", fit_labels))}


def _at_slot(transformer: Transformer, params: Params, prompts: Episode, slot: int,
             batch: int) -> jax.Array:
  """The predictions at `slot` of prompts [batch · n, slot + 1], as [batch, n, O]."""
  y_hat = transformer.predict(params, prompts)[:, slot]
  return y_hat.reshape((batch, -1) + y_hat.shape[-1:])


def _check(episode: Episode, fresh_x: jax.Array, examples: Sequence[int], steps: int,
           ranks: Sequence[int]) -> None:
  if not ranks:
    raise ValueError("distillation_grid: ranks must name at least one LoRA rank, got none")
  check_grid(episode, examples, steps, ranks)
  if fresh_x.ndim != 3 or fresh_x.shape[0] != episode.batch_size or \
      fresh_x.shape[2] != episode.dim or fresh_x.shape[1] < 1:
    raise ValueError(f"fresh inputs must be [prompts={episode.batch_size}, M >= 1, "
                     f"dim={episode.dim}], got {tuple(fresh_x.shape)}")


def distillation_grid(transformer: Transformer, params: Params, episode: Episode,
                      fresh_x: jax.Array, examples: Sequence[int], *, steps: int,
                      ranks: Sequence[int], learning_rate: float = 1e-3,
                      loss: str = "squared_error", seed: int = 0) -> dict[str, Any]:
  """Per k and rank, both routes' curves (module docstring), averaged over the prompts.

  episode [B, P]: prompt b's first k pairs are its context, its points k .. P − 1 the scored
  queries; fresh_x [B, M, D]: prompt b's fresh inputs (a second draw of the task's inputs).
  A linear-attention transformer also gets the exact write (route "written", 0 steps).
  Returns {"in_context": {k: error}, "curves": {(k, route, trained_on): {"gap", "error"}},
  "rows": [one dict per (k, route, trained_on)]}, errors and gaps normalised by the prompts'
  zero loss.
  """
  _check(episode, fresh_x, examples, steps, ranks)
  per_point = losses.get(loss)
  batch = episode.batch_size
  scale = 1.0 / np.asarray(episode.zero_loss)
  mean = lambda values: float(np.mean(np.asarray(values) * scale))
  result = {"in_context": {}, "curves": {}, "rows": []}
  for k in examples:
    icl = _at_slot(transformer, params, query_episodes(episode, k), k, batch)    # [B, Q, O]
    teacher = _at_slot(transformer, params, probe_episodes(episode, k, fresh_x), k, batch)
    x_query, y_query = episode.x[:, k:], episode.y[:, k:]
    icl_error = float(np.mean(np.mean(np.asarray(per_point(icl, y_query)), axis=1) * scale))
    result["in_context"][k] = icl_error
    for rank in ranks:
      adaptable = transformer_adaptable(transformer, lora(params, rank, seed))
      per_prompt = jax.jit(jax.vmap(lambda xc, yc, xf, tf, xq, iq, yq, a=adaptable:
                                    distillation_curves(a, xc, yc, xf, tf, xq, iq, yq,
                                                        steps=steps,
                                                        optimizer=optax.adam(learning_rate),
                                                        loss=per_point)))
      curves = per_prompt(episode.x[:, :k], episode.y[:, :k], fresh_x, teacher, x_query, icl,
                          y_query)
      for name, curve in curves.items():
        curve = {score: np.mean(np.asarray(c) * scale[:, None], axis=0)
                 for score, c in curve.items()}
        result["curves"][(k, f"LoRA r={rank}", TRAINED_ON[name])] = curve
        result["rows"].append(_row(k, f"LoRA r={rank}", TRAINED_ON[name], icl_error, curve))
    if transformer.attention == "linear":
      y_hat = jax.jit(jax.vmap(lambda xc, yc, xq: predict_written(
          transformer, params, write_context(transformer, params, xc, yc), xq)))(
              episode.x[:, :k], episode.y[:, :k], x_query)
      exact = {"gap": np.array([mean(np.mean(losses.squared_error(y_hat, icl), axis=1))]),
               "error": np.array([mean(np.mean(per_point(y_hat, y_query), axis=1))])}
      result["rows"].append(_row(k, "written (exact)", "the context itself", icl_error, exact))
  return result


def _row(k: int, route: str, trained_on: str, icl_error: float,
         curve: dict[str, np.ndarray]) -> dict[str, Any]:
  return {"k": k, "route": route, "trained_on": trained_on, "in_context_error": icl_error,
          "zero_shot_gap": float(curve["gap"][0]), "gap_at_budget": float(curve["gap"][-1]),
          "error_at_budget": float(curve["error"][-1])}
