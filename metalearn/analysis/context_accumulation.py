"""Writing several tasks' contexts into the same weights, one after another: what is kept, what
interferes, and what the fast weights cost in memory against the context's KV cache.

Groups of T held-out prompts, each a task of its own: the first k pairs of prompt 1, then of
prompt 2, ..., T are written in turn (learners/context_writing.write_context with a decay λ per
write: F ← λ F + F_new). Afterwards each task is predicted at its own remaining points from the
weights that hold all T, beside the same task written alone (exactly its in-context prediction)
and with nothing written (the zero-shot prediction). Its error against its age, the number of
tasks written after it, shows how much of it the later writes left.

A KV cache holds every context token's key and value in every layer, growing with the tokens;
the fast weights are one matrix per layer and head, whatever was written.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import checks, losses
from metalearn.core.episode import Episode
from metalearn.learners.base import Params
from metalearn.learners.context_writing import (Written, check_writable, predict_written,
                                                write_context)
from metalearn.learners.gd_layers import GDLayers
from metalearn.learners.transformer import Transformer


def fast_weight_bytes(written: Written) -> int:
  """The bytes of one set of fast weights (unbatched: one group's)."""
  return int(sum(w.size * w.dtype.itemsize for w in written.layers))


def kv_cache_bytes(learner: Any, params: Params, tokens: int, itemsize: int = 4) -> int:
  """The bytes a KV cache of `tokens` context tokens holds: a key and a value per token in every
  layer application (transformer: hidden wide; gd_layers: heads × key width)."""
  if isinstance(learner, (Transformer, GDLayers)):
    return learner.kv_cache_floats(params, tokens) * itemsize
  raise TypeError(f"kv_cache_bytes: a transformer or gd_layers learner, got "
                  f"{type(learner).__name__}")


def _errors(per_point, y_hat: jax.Array, y: jax.Array, scale: np.ndarray) -> np.ndarray:
  """Normalised error per task, averaged over groups: y_hat, y [G, T, Q, O] -> [T]."""
  return np.mean(np.mean(np.asarray(per_point(y_hat, y)), axis=-1) * scale, axis=0)


def accumulation(learner: Any, params: Params, episode: Episode, *, tasks: int, examples: int,
                 decays: Sequence[float], loss: str = "squared_error") -> dict[str, Any]:
  """Each task's error after all T writes, per decay (module docstring).

  episode [B, P]: the first B // tasks · tasks prompts in groups of `tasks`; each prompt's first
  `examples` pairs are written, its points examples .. P − 1 scored. Returns {"rows": one dict
  per (decay, task), task 0 written first; "memory": fast-weight and KV-cache bytes}.
  """
  check_writable(learner, "accumulation")
  checks.check_int("tasks", tasks, 1, name_kind=False)
  checks.check_int("examples", examples, 1, name_kind=False)
  if not decays or not all(0.0 <= decay <= 1.0 for decay in decays):
    raise ValueError(f"accumulation: decays must be one or more values in [0, 1], got "
                     f"{list(decays)}")
  groups = episode.batch_size // tasks
  if groups < 1 or examples >= episode.num_points:
    raise ValueError(f"accumulation: {tasks} tasks of {examples} examples need at least "
                     f"{tasks} prompts of more than {examples} points, got "
                     f"{episode.batch_size} of {episode.num_points}")
  if isinstance(learner, Transformer):  # all T contexts and a query fit the position table
    learner.check_episode(tasks * examples + 1, episode.dim)
  per_point = losses.get(loss)
  split = lambda a: a[:groups * tasks].reshape((groups, tasks) + a.shape[1:])
  x, y = split(episode.x), split(episode.y)
  x_context, y_context, x_query, y_query = (x[:, :, :examples], y[:, :, :examples],
                                            x[:, :, examples:], y[:, :, examples:])
  scale = 1.0 / np.asarray(split(episode.zero_loss))                          # [G, T]
  each = lambda f: jax.jit(jax.vmap(jax.vmap(f)))                           # over G and T

  predict_each = each(lambda w, xq: predict_written(learner, params, w, xq))
  alone = each(lambda xc, yc: write_context(learner, params, xc, yc))(x_context, y_context)
  alone_error = _errors(per_point, predict_each(alone, x_query), y_query, scale)
  nothing = Written([jnp.zeros_like(w) for w in alone.layers], 0)
  nothing_error = _errors(per_point, predict_each(nothing, x_query), y_query, scale)

  rows, written = [], None
  for decay in decays:
    def write_all(xc: jax.Array, yc: jax.Array, decay: float = float(decay)) -> Written:
      written = None
      for t in range(tasks):
        written = write_context(learner, params, xc[t], yc[t], prior=written, decay=decay)
      return written

    written = jax.jit(jax.vmap(write_all))(x_context, y_context)
    after = jax.jit(jax.vmap(lambda w, xq: jax.vmap(
        lambda q: predict_written(learner, params, w, q))(xq)))(written, x_query)
    after_error = _errors(per_point, after, y_query, scale)
    for t in range(tasks):
      rows.append({"decay": float(decay), "task": t, "writes_after": tasks - 1 - t,
                   "error_after_all": float(after_error[t]), "error_alone": float(alone_error[t]),
                   "error_nothing_written": float(nothing_error[t])})
  one_group = Written([w[0] for w in written.layers], written.tokens)
  memory = {"context_tokens": written.tokens,
            "fast_weight_bytes": fast_weight_bytes(one_group),
            "kv_cache_bytes": kv_cache_bytes(learner, params, written.tokens)}
  return {"rows": rows, "memory": memory}
