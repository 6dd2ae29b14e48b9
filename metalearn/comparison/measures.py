"""The comparison's measures on shared held-out prompts: errors, prediction and weight
differences, sensitivities. Each returns plain numpy tables, keyed by learner or pair.

A prefix learner predicts at every position k from the k pairs before it; a fixed-context
learner (N pairs) makes the same kind of prediction at position N only, so its values at
other numbers of examples are NaN and the pairs it belongs to are compared at N alone.
"""

import functools
import itertools
from typing import Sequence

import jax
import numpy as np

from metalearn.evaluation import evaluate
from metalearn.analysis import implicit_weights, similarity
from metalearn.comparison.entries import Entry
from metalearn.core.episode import Episode
from metalearn.learners import Learner
from metalearn.learners.base import Params
from metalearn.tasks import TaskFamily


def pair_name(a: str, b: str) -> str:
  return f"{a} vs {b}"


def pairs(entries: Sequence[Entry]) -> list[tuple[Entry, Entry]]:
  return list(itertools.combinations(entries, 2))


def predicts_at(entry: Entry | Learner, shots: int) -> bool:
  """Whether the entry (or learner) makes a k-shot prediction at position k = `shots`."""
  return entry.context_points in (None, shots)


def valid_positions(entry: Entry, points: int) -> np.ndarray:
  """[points] bool: the positions at which the entry's prediction is a k-shot prediction."""
  return np.array([predicts_at(entry, k) for k in range(points)])


@functools.partial(jax.jit, static_argnums=0)
def _predict(learner: Learner, params: Params, episode: Episode) -> jax.Array:
  return learner.predict(params, episode)


def predictions(entries: Sequence[Entry], episode: Episode, batch_size: int
                ) -> dict[str, np.ndarray]:
  """Every entry's predictions [prompts, points, out] on the same prompts, in chunks."""
  return {entry.name: np.concatenate([np.asarray(_predict(entry.learner, entry.params, chunk))
                                      for chunk in evaluate.chunks(episode, batch_size)])
          for entry in entries}


def normalised_errors(entries: Sequence[Entry], predicted: dict[str, np.ndarray],
                      task: TaskFamily, episode: Episode) -> dict[str, np.ndarray]:
  """Per entry, error / the zero predictor's [prompts, points]; NaN where it makes no k-shot
  prediction."""
  zero = np.asarray(episode.zero_loss)[:, None]
  return {entry.name: np.where(valid_positions(entry, episode.num_points)[None],
                               np.asarray(task.loss(predicted[entry.name], episode.y)) / zero,
                               np.nan)
          for entry in entries}


def error_curves(errors: dict[str, np.ndarray], resamples: int, seed: int
                 ) -> dict[str, dict[str, np.ndarray]]:
  """Per entry, the mean normalised error by number of examples and its bootstrap 90% interval."""
  curves = {}
  for name, per_prompt in errors.items():
    low, high = evaluate.bootstrap_interval(per_prompt, resamples, seed)
    curves[name] = {"mean": per_prompt.mean(axis=0), "low": low, "high": high}
  return curves


def query_contexts(entries: Sequence[Entry], task: TaskFamily) -> tuple[int, ...]:
  """The context sizes whose queries are scored as a run's own evaluation scores them: each
  fixed-context learner's, and the support set of a task whose episodes open with one."""
  contexts = {e.context_points for e in entries if e.context_points is not None}
  if task.context_points is not None:
    contexts.add(task.context_points)
  return tuple(sorted(contexts))


def query_tables(entries: Sequence[Entry], task: TaskFamily, episode: Episode,
                 contexts: Sequence[int], batch_size: int
                 ) -> dict[int, dict[str, dict[str, float]]]:
  """{context: {entry: {metric: mean, metric_ci95: 95% half-width}}}: every query after the
  first `context` pairs of a prompt, predicted from those pairs alone (`evaluate.query_metrics`),
  by each entry that predicts there; the loss, normalised loss and the task's metrics."""
  return {c: evaluate.summarise_queries({
      e.name: evaluate.query_metrics(e.learner, e.params, task, episode, c, batch_size)
      for e in entries if predicts_at(e, c)}) for c in contexts}


def prediction_differences(entries: Sequence[Entry], predicted: dict[str, np.ndarray]
                           ) -> dict[str, np.ndarray]:
  """Per pair, the mean over prompts of Σ_out (ŷ_a − ŷ_b)² by number of examples [points]
  (Akyürek et al. 2022's SPD); NaN where either makes no k-shot prediction."""
  table = {}
  for a, b in pairs(entries):
    y_a, y_b = predicted[a.name], predicted[b.name]
    both = valid_positions(a, y_a.shape[1]) & valid_positions(b, y_a.shape[1])
    table[pair_name(a.name, b.name)] = np.where(
        both, np.sum(np.square(y_a - y_b), axis=-1).mean(axis=0), np.nan)
  return table


def implicit_weight_tables(entries: Sequence[Entry], task: TaskFamily, episode: Episode,
                           shots: Sequence[int], num_probes: int, seed: int, batch_size: int
                           ) -> dict[str, dict[str, dict[int, float]]]:
  """Implicit linear weights at each number of examples in `shots`:

  to_true_weights   {entry: {k: mean ‖ŵ − w‖²}}, w the task's weights;
  difference        {pair: {k: mean ‖ŵ_a − ŵ_b‖²}} (ILWD, Akyürek et al. 2022).
  """
  weights = {entry.name: {k: implicit_weights.implicit_weights(
      entry.learner, entry.params, task, episode, k, num_probes, seed, batch_size)
      for k in shots if predicts_at(entry, k)} for entry in entries}
  true_w = np.asarray(episode.info["w"])
  to_true = {name: {k: float(implicit_weights.weight_difference(w, true_w).mean())
                    for k, w in by_shots.items()} for name, by_shots in weights.items()}
  difference = {}
  for a, b in pairs(entries):
    common = [k for k in shots if k in weights[a.name] and k in weights[b.name]]
    difference[pair_name(a.name, b.name)] = {
        k: float(implicit_weights.weight_difference(weights[a.name][k],
                                                    weights[b.name][k]).mean())
        for k in common}
  return {"to_true_weights": to_true, "difference": difference}


_sensitivity = jax.jit(similarity.sensitivity, static_argnums=(0, 3))


def sensitivity_tables(entries: Sequence[Entry], episode: Episode, shots: Sequence[int],
                       batch_size: int) -> dict[str, dict[str, dict[int, float]]]:
  """∂ŷ/∂x_q at the query after k examples, per pair: mean cosine similarity and mean L2
  difference over prompts (von Oswald et al. 2022 compare trained LSA and GD so)."""
  grads = {entry.name: {k: np.concatenate([np.asarray(_sensitivity(entry.learner,
                                                                    entry.params, chunk, k))
                                           for chunk in evaluate.chunks(episode, batch_size)])
                        for k in shots if predicts_at(entry, k)} for entry in entries}
  cosine, l2 = {}, {}
  for a, b in pairs(entries):
    common = [k for k in shots if k in grads[a.name] and k in grads[b.name]]
    name = pair_name(a.name, b.name)
    cosine[name] = {k: float(np.mean(similarity.cosine_similarity(grads[a.name][k],
                                                                  grads[b.name][k])))
                    for k in common}
    l2[name] = {k: float(np.mean(similarity.l2_difference(grads[a.name][k], grads[b.name][k])))
                for k in common}
  return {"cosine": cosine, "l2": l2}
