"""Held-out evaluation: error against the number of in-context examples, and K-shot query errors."""

import csv
import functools
import json
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.episode import Episode
from metalearn.learners import Learner
from metalearn.learners.base import Params
from metalearn.tasks import TaskFamily


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def held_out_episodes(task: TaskFamily, num_prompts: int, points: int, seed: int) -> Episode:
  """The fixed evaluation prompts: every learner is scored on these same ones."""
  return task.sample(jax.random.PRNGKey(seed), num_prompts, points)


def chunks(episode: Episode, batch_size: int):
  """The episode's prompts in consecutive slices of at most `batch_size` (one compiled shape)."""
  for start in range(0, episode.batch_size, batch_size):
    yield jax.tree.map(lambda a: a[start:start + batch_size], episode)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _normalised_errors(learner: Learner, task: TaskFamily, params: Params,
                       episode: Episode) -> jax.Array:
  y_hat = learner.predict(params, episode)
  return task.loss(y_hat, episode.y) / episode.zero_loss[:, None]     # [batch, points]


def normalised_errors(learner: Learner, params: Params, task: TaskFamily, episode: Episode,
                      batch_size: int) -> np.ndarray:
  """Per-prompt, per-position error [prompts, points], divided by the zero predictor's.

  Position k is the error of the prediction made from k in-context examples.
  Prompts run in chunks of `batch_size` under one compiled shape.
  """
  return np.concatenate([np.asarray(_normalised_errors(learner, task, params, chunk))
                         for chunk in chunks(episode, batch_size)])


def error_by_shots(learners: Mapping[str, tuple[Learner, Params]], task: TaskFamily,
                   episode: Episode, batch_size: int) -> dict[str, np.ndarray]:
  """Mean normalised error against the number of in-context examples, per learner."""
  return {name: normalised_errors(learner, params, task, episode, batch_size).mean(axis=0)
          for name, (learner, params) in learners.items()}


def write_error_table(errors: Mapping[str, np.ndarray], directory: str) -> None:
  """Writes `errors.csv` (a row per number of examples) and `errors.json`."""
  os.makedirs(directory, exist_ok=True)
  names = list(errors)
  with open(os.path.join(directory, "errors.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["examples"] + names)
    for k in range(len(next(iter(errors.values())))):
      writer.writerow([k] + [f"{float(errors[name][k]):.6g}" for name in names])
  with open(os.path.join(directory, "errors.json"), "w") as f:
    json.dump({name: [float(v) for v in values] for name, values in errors.items()}, f, indent=1)


def query_episodes(episode: Episode, context_points: int) -> Episode:
  """Every query j >= context_points as a prompt of its own: the context, then (x_j, y_j).

  [batch, points] -> [batch · queries, context_points + 1], so that a prefix learner
  predicts each query from the context alone, as a fixed-context learner does, and never
  from the queries before it.
  """
  queries = episode.num_points - context_points

  def split(a):
    context = jnp.broadcast_to(a[:, None, :context_points],
                               (a.shape[0], queries, context_points) + a.shape[2:])
    return jnp.concatenate([context, a[:, context_points:, None]], axis=2).reshape(
        (a.shape[0] * queries, context_points + 1) + a.shape[2:])

  repeat = lambda a: jnp.repeat(a, queries, axis=0)
  return Episode(x=split(episode.x), y=split(episode.y), mask=split(episode.mask),
                 zero_loss=repeat(episode.zero_loss), info=jax.tree.map(repeat, episode.info))


def _query_predictions(learner: Learner, context_points: int, params: Params,
                       episode: Episode) -> jax.Array:
  if learner.context_points is None:
    y_hat = learner.predict(params, query_episodes(episode, context_points))[:, -1]
    return y_hat.reshape(episode.batch_size, -1, y_hat.shape[-1])
  return learner.predict(params, episode)[:, context_points:]


_jitted_query_predictions = jax.jit(_query_predictions, static_argnums=(0, 1))


def query_predictions(learner: Learner, params: Params, episode: Episode, context_points: int,
                      batch_size: int) -> np.ndarray:
  """ŷ [prompts, queries, out]: each query j >= context_points predicted from the first
  `context_points` pairs of its prompt only, by any learner (see `query_metrics`)."""
  _check_query_context(learner, context_points)
  return np.concatenate([np.asarray(_jitted_query_predictions(learner, context_points, params,
                                                              chunk))
                         for chunk in chunks(episode, batch_size)])


def _check_query_context(learner: Learner, context_points: int) -> None:
  if learner.context_points not in (None, context_points):
    raise ValueError(f"the learner adapts on {learner.context_points} context points; "
                     f"allowed here: {context_points}")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _query_metrics(learner: Learner, task: TaskFamily, context_points: int, params: Params,
                   episode: Episode) -> dict[str, jax.Array]:
  y_hat = _query_predictions(learner, context_points, params, episode)
  y = episode.y[:, context_points:]
  loss = task.loss(y_hat, y)
  return {"loss": loss, "normalised": loss / episode.zero_loss[:, None],
          **task.metrics(y_hat, y)}


def query_metrics(learner: Learner, params: Params, task: TaskFamily, episode: Episode,
                  context_points: int, batch_size: int) -> dict[str, np.ndarray]:
  """Per-prompt, per-query loss, normalised loss and task metrics [prompts, queries].

  Each query is predicted from the first `context_points` pairs of its prompt only, by any
  learner: one with that fixed context directly, a prefix learner through `query_episodes`.
  """
  _check_query_context(learner, context_points)
  parts = [_query_metrics(learner, task, context_points, params, chunk)
           for chunk in chunks(episode, batch_size)]
  return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}


def mean_and_interval(per_prompt: np.ndarray) -> tuple[float, float]:
  """The mean over prompts and its 95% interval half-width, 1.96·std/√n (Finn et al.)."""
  per_prompt = np.asarray(per_prompt, np.float64)
  return float(per_prompt.mean()), float(1.96 * per_prompt.std() / np.sqrt(len(per_prompt)))


def bootstrap_interval(per_prompt: np.ndarray, resamples: int, seed: int, level: float = 0.9
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The percentile bootstrap interval of the mean over prompts (axis 0) at `level`.

  per_prompt [prompts, ...] -> (low, high), each [...]: prompts resampled with replacement
  `resamples` times, as counts per prompt (one matrix product, no loop over resamples).
  NaN entries (positions a learner does not predict) stay NaN.
  """
  if resamples < 1:
    raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
  if not 0 < level < 1:
    raise ValueError(f"bootstrap level must be in (0, 1), got {level}")
  values = np.asarray(per_prompt, np.float64)
  n = values.shape[0]
  picks = jax.random.randint(jax.random.PRNGKey(seed), (resamples, n), 0, n)
  counts = np.asarray(jnp.zeros((resamples, n)).at[jnp.arange(resamples)[:, None], picks]
                      .add(1.0), np.float64)
  means = counts @ values.reshape(n, -1) / n                       # [resamples, ...]
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(means, [tail, 100 - tail], axis=0)
  return low.reshape(values.shape[1:]), high.reshape(values.shape[1:])


def summarise_queries(metrics: Mapping[str, Mapping[str, np.ndarray]]
                      ) -> dict[str, dict[str, float]]:
  """Per learner, each metric's mean over prompts (of its mean over queries) ± 95%."""
  table = {}
  for learner_name, values in metrics.items():
    row = {}
    for metric, per_query in values.items():
      row[metric], row[f"{metric}_ci95"] = mean_and_interval(per_query.mean(axis=1))
    table[learner_name] = row
  return table


def write_query_table(table: Mapping[str, Mapping[str, float]], directory: str) -> None:
  """Writes `query_errors.csv` (a row per learner) and `query_errors.json`."""
  os.makedirs(directory, exist_ok=True)
  columns = list(next(iter(table.values())))
  with open(os.path.join(directory, "query_errors.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["learner"] + columns)
    for name, row in table.items():
      writer.writerow([name] + [f"{row[c]:.6g}" for c in columns])
  with open(os.path.join(directory, "query_errors.json"), "w") as f:
    json.dump(table, f, indent=1)
