"""Scoring learners on held-out prompts: the error after every number of examples, and the metrics
of the queries after a context. `evaluate_learners` is the one scoring of a run's own evaluation
and of a comparison's errors."""

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from metalearn.core.episode import Episode
from metalearn.evaluation import device_split
from metalearn.evaluation.intervals import mean_and_interval
from metalearn.evaluation.prompts import held_out_episodes, query_episodes
from metalearn.evaluation.shots import check_predicts_at, predicts_at, valid_positions
from metalearn.learners import Learner
from metalearn.learners.base import Params
from metalearn.tasks import TaskFamily


@functools.partial(jax.jit, static_argnums=(0, 3))
def _predict(learner: Learner, params: Params, episode: Episode, mesh) -> jax.Array:
  return device_split.split_prompts(learner.predict, mesh)(params, episode)


def predictions(learner: Learner, params: Params, episode: Episode, batch_size: int
                ) -> np.ndarray:
  """ŷ [prompts, points, out] at every position, the prompts in chunks of `batch_size` (one
  compiled shape), each chunk split over this process's devices (device_split.py)."""
  return device_split.over_chunks(lambda chunk, mesh: _predict(learner, params, chunk, mesh),
                                  episode, batch_size)


# Compiled: XLA's fused loss and division can differ from eager ones in the last bit, and every
# run's errors (the shipped runs', RESULTS.md's) were computed compiled.
@functools.partial(jax.jit, static_argnums=0)
def _normalised_loss(task: TaskFamily, y_hat: jax.Array, episode: Episode) -> jax.Array:
  return task.loss(y_hat, episode.y) / episode.zero_loss[:, None]


def normalised_errors(learner: Learner, task: TaskFamily, episode: Episode,
                      predicted: np.ndarray) -> np.ndarray:
  """Per-prompt, per-position error [prompts, points] of the learner's `predictions`, divided by
  the zero predictor's; NaN where it makes no k-shot prediction.

  Position k is the error of the prediction made from k in-context examples.
  """
  return np.where(valid_positions(learner, episode.num_points)[None],
                  np.asarray(_normalised_loss(task, predicted, episode)), np.nan)


def _query_predictions(learner: Learner, context_points: int, params: Params,
                       episode: Episode) -> jax.Array:
  if learner.context_points is None:
    y_hat = learner.predict(params, query_episodes(episode, context_points))[:, -1]
    return y_hat.reshape(episode.batch_size, -1, y_hat.shape[-1])
  return learner.predict(params, episode)[:, context_points:]


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _jitted_query_predictions(learner: Learner, context_points: int, params: Params,
                              episode: Episode, mesh) -> jax.Array:
  return device_split.split_prompts(
      functools.partial(_query_predictions, learner, context_points), mesh)(params, episode)


def query_predictions(learner: Learner, params: Params, episode: Episode, context_points: int,
                      batch_size: int) -> np.ndarray:
  """ŷ [prompts, queries, out]: each query j >= context_points predicted from the first
  `context_points` pairs of its prompt only, by any learner (see `query_metrics`)."""
  check_predicts_at(learner, context_points)
  return device_split.over_chunks(
      lambda chunk, mesh: _jitted_query_predictions(learner, context_points, params, chunk, mesh),
      episode, batch_size)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 5))
def _query_metrics(learner: Learner, task: TaskFamily, context_points: int, params: Params,
                   episode: Episode, mesh) -> dict[str, jax.Array]:
  def metrics(params, episode):
    y_hat = _query_predictions(learner, context_points, params, episode)
    y = episode.y[:, context_points:]
    loss = task.loss(y_hat, y)
    return {"loss": loss, "normalised": loss / episode.zero_loss[:, None],
            **task.metrics(y_hat, y)}
  return device_split.split_prompts(metrics, mesh)(params, episode)


def query_metrics(learner: Learner, params: Params, task: TaskFamily, episode: Episode,
                  context_points: int, batch_size: int) -> dict[str, np.ndarray]:
  """Per-prompt, per-query loss, normalised loss and task metrics [prompts, queries].

  Each query is predicted from the first `context_points` pairs of its prompt only, by any
  learner: one with that fixed context directly, a prefix learner through `query_episodes`.
  """
  check_predicts_at(learner, context_points)
  return device_split.over_chunks(
      lambda chunk, mesh: _query_metrics(learner, task, context_points, params, chunk, mesh),
      episode, batch_size)


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


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Named learners scored on the same held-out prompts (see `evaluate_learners`)."""

  # {learner: error / the zero predictor's [prompts, points]}, NaN where the learner makes no
  # k-shot prediction; empty when the learners were scored on their queries alone.
  normalised_errors: dict[str, np.ndarray]
  # {context: {learner: {metric: mean over prompts, metric_ci95: its 95% half-width}}}: the
  # queries after each context scored, by every learner that predicts after it.
  query_tables: dict[int, dict[str, dict[str, float]]]

  @property
  def errors(self) -> dict[str, np.ndarray]:
    """{learner: mean normalised error after k examples [points]}; NaN where it predicts none."""
    return {name: per_prompt.mean(axis=0) for name, per_prompt in self.normalised_errors.items()}

  @property
  def queries(self) -> dict[str, dict[str, float]]:
    """The query table of the one context scored (a run's), {learner: {metric: ...}}; {} when
    no context was scored."""
    if len(self.query_tables) > 1:
      raise ValueError(f"queries were scored after {len(self.query_tables)} contexts "
                       f"({', '.join(map(str, self.query_tables))}); pick one of query_tables")
    return next(iter(self.query_tables.values()), {})


def evaluate_learners(learners: Mapping[str, tuple[Learner, Params]], task: TaskFamily,
                      episode: Episode, batch_size: int, *, by_shots: bool = True,
                      contexts: Sequence[int] = (),
                      predicted: Mapping[str, np.ndarray] | None = None) -> Evaluation:
  """Scores every named (learner, params) on the same held-out prompts, in chunks of `batch_size`.

  With `by_shots`, the normalised error after every number of examples (from the learners'
  `predictions`, or from `predicted` {name: ŷ [prompts, points, out]} when already made); for
  each of `contexts`, the loss, normalised loss and task metrics of the queries after that
  context, each predicted from it alone (`query_metrics`), by the learners that predict there.
  """
  errors = {}
  if by_shots:
    for name, (learner, params) in learners.items():
      y_hat = (predicted[name] if predicted is not None
               else predictions(learner, params, episode, batch_size))
      errors[name] = normalised_errors(learner, task, episode, y_hat)
  tables = {c: summarise_queries({
      name: query_metrics(learner, params, task, episode, c, batch_size)
      for name, (learner, params) in learners.items() if predicts_at(learner, c)})
      for c in contexts}
  return Evaluation(errors, tables)


def evaluate_held_out(learners: Mapping[str, tuple[Learner, Params]], task: TaskFamily,
                      num_prompts: int, points: int, seed: int, batch_size: int, *,
                      by_shots: bool = True, contexts: Sequence[int] = ()) -> Evaluation:
  """`evaluate_learners` on the held-out prompts of each of `task.held_out_families()`, one
  Evaluation; with more than one family (a task pool's "pretrain" and "latent"), every name
  says its family: "transformer (pretrain)". Each family's prompts come from the same seed."""
  families = task.held_out_families()
  parts = {split: evaluate_learners(learners, family,
                                    held_out_episodes(family, num_prompts, points, seed),
                                    batch_size, by_shots=by_shots, contexts=contexts)
           for split, family in families.items()}
  if len(parts) == 1:
    return next(iter(parts.values()))
  return merge_evaluations(parts, lambda name, split: f"{name} ({split})")


def merge_evaluations(parts: Mapping[str, Evaluation], named: Callable[[str, str], str]
                      ) -> Evaluation:
  """Evaluations of the same contexts (held-out families, a sweep's members) as one, each
  learner's name given by `named(learner, part)`."""
  errors = {named(name, key): values for key, part in parts.items()
            for name, values in part.normalised_errors.items()}
  contexts = next(iter(parts.values())).query_tables
  tables = {c: {named(name, key): row for key, part in parts.items()
                for name, row in part.query_tables[c].items()} for c in contexts}
  return Evaluation(errors, tables)
