"""The exchange rate of a trained transformer over a grid: examples k, fine-tuning steps s, LoRA
ranks r and starting weights.

For each held-out prompt and each k, the in-context error is the transformer's normalised error
at position k (it has read the k pairs before it); fine-tuning takes the same k pairs, starts
from each of `starts` (the trained params, a random init, another run's params of the same
shapes), moves all weights or LoRA adapters of each rank, and predicts the same point k with no
context after every step s. Per (k, start, route) the table gives the fewest steps that match
in context (or None: not within the budget), their FLOPs, and the number of later queries after
which fine-tuning once is cheaper than re-reading the k examples with every query.
"""

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import optax

from metalearn.analysis.exchange_rate import (break_even_queries, errors_by_step,
                                              fewest_steps, fine_tuning_flops,
                                              transformer_adaptable,
                                              transformer_forward_flops)
from metalearn.core import checks, losses
from metalearn.core.episode import Episode
from metalearn.learners.base import Params
from metalearn.learners.fine_tuning import Trainable, all_weights, lora
from metalearn.learners.transformer import Transformer


def _routes(ranks: Sequence[int], seed: int) -> dict[str, Callable[[Params], Trainable]]:
  routes = {"all weights": all_weights}
  routes.update({f"LoRA r={rank}": functools.partial(lora, rank=rank, seed=seed)
                 for rank in ranks})
  return routes


def _curves_program(transformer: Transformer, route: Callable[[Params], Trainable], k: int,
                    steps: int, optimizer: optax.GradientTransformation, per_point: Callable):
  """(start params, x [B, P, D], y [B, P, O]) -> [B, steps + 1]: each prompt's query error at
  point k while fine-tuning on its first k pairs. The starting weights are an argument, so
  every start of the same shapes runs one compiled program."""
  def curves(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    adaptable = transformer_adaptable(transformer, route(params))
    return jax.vmap(lambda xc, yc, xq, yq: errors_by_step(
        adaptable, xc, yc, xq, yq, steps=steps, optimizer=optimizer, loss=per_point))(
            x[:, :k], y[:, :k], x[:, k:k + 1], y[:, k:k + 1])
  return jax.jit(curves)


def check_grid(episode: Episode, examples: Sequence[int], steps: int,
               ranks: Sequence[int]) -> None:
  """Refuses a grid of fine-tuning runs that cannot run: steps and ranks below 1, and k that
  leaves no query in the prompts."""
  checks.check_int("steps", steps, 1, name_kind=False)
  for rank in ranks:
    checks.check_int("LoRA rank", rank, 1, name_kind=False)
  for k in examples:
    checks.check_int("examples k", k, 1, name_kind=False)
    if k >= episode.num_points:
      raise ValueError(f"examples k={k} must leave a query in prompts of {episode.num_points} "
                       "points")


def exchange_grid(transformer: Transformer, starts: Mapping[str, Params], episode: Episode,
                  examples: Sequence[int], *, steps: int, ranks: Sequence[int] = (),
                  learning_rate: float = 1e-3, loss: str = "squared_error",
                  seed: int = 0) -> dict[str, Any]:
  """The grid's curves and table (module docstring); `starts["trained"]` predicts in context.

  Returns {"in_context": {k: error}, "curves": {(k, start, route): [steps + 1] errors},
  "rows": [one dict per (k, start, route)]}, errors normalised by the prompts' zero loss.
  """
  if "trained" not in starts:
    raise ValueError(f"exchange_grid: starts must hold 'trained' (the in-context learner's "
                     f"params); got {sorted(starts)}")
  check_grid(episode, examples, steps, ranks)
  per_point = losses.get(loss)
  in_context_y = transformer.predict(starts["trained"], episode)           # [B, P, O]
  hidden, layers = transformer.hidden, transformer.num_layers
  dim, out = episode.dim, episode.y.shape[-1]
  zero_shot_flops = transformer_forward_flops(hidden, layers, dim, out, 1)
  # Weights read from a checkpoint are committed to a device and a fresh init is not; jit keys
  # its cache on that too, so every start is committed alike to share one program.
  committed = {name: jax.device_put(params, jax.devices()[0]) for name, params in starts.items()}
  routes, optimizer = _routes(ranks, seed), optax.adam(learning_rate)
  result = {"in_context": {}, "curves": {}, "rows": []}
  for k in examples:
    scale = 1.0 / np.asarray(episode.zero_loss)
    icl = float(np.mean(np.asarray(per_point(in_context_y[:, k], episode.y[:, k])) * scale))
    result["in_context"][k] = icl
    curves = {}  # computed route by route (one compile each), reported start by start
    for route_name, route in routes.items():
      program = _curves_program(transformer, route, k, steps, optimizer, per_point)
      for start_name, params in committed.items():
        curve = np.asarray(program(params, episode.x, episode.y))        # [B, steps + 1]
        curves[(start_name, route_name)] = np.mean(curve * scale[:, None], axis=0)
    for start_name in starts:
      for route_name in routes:
        curve = curves[(start_name, route_name)]
        result["curves"][(k, start_name, route_name)] = curve
        needed = fewest_steps(icl, curve)
        cost = None if needed is None else fine_tuning_flops(zero_shot_flops, k, needed)
        in_context_flops = transformer_forward_flops(hidden, layers, dim, out, k + 1)
        result["rows"].append({
            "k": k, "start": start_name, "route": route_name, "in_context_error": icl,
            "error_at_budget": float(curve[-1]), "steps_to_match": needed,
            "fine_tune_flops": cost,
            "break_even_queries": (None if cost is None else
                                   break_even_queries(cost, in_context_flops, zero_shot_flops))})
  return result
