"""Task diversity (Raventós et al. 2023): how close a model trained on a pool of M tasks
predicts to each of the two Bayes predictors, dMMSE (the posterior mean over the pool) and
ridge with λ = σ²/τ² (the posterior mean over fresh Gaussian tasks), on the pool's own tasks
("pretrain") and on fresh ones ("latent").

The distance is their squared prediction difference per dimension, Σ_out (ŷ − ŷ_Bayes)² / D,
averaged over held-out prompts and over every position of the prompt. Below a threshold of M
the model is closer to dMMSE on pretrain tasks; above it, closer to ridge; the threshold is the
smallest pool size from which it stays closer to ridge.
"""

from typing import Any, Mapping, Sequence

import numpy as np

from metalearn.evaluation import prompts, scores
from metalearn.learners import Learner, make_baseline
from metalearn.learners.base import Params
from metalearn.tasks import TaskFamily

BAYES = {"dmmse": "dmmse", "ridge": "bayes_ridge"}  # the two predictors, by the names reported


def check_pool(task: TaskFamily) -> None:
  """A pool of linear tasks with a Gaussian base prior, or a ValueError naming the task."""
  if not getattr(task, "is_linear", False):
    raise ValueError(f"the task-diversity distances need a task pool of linear_regression "
                     f"tasks (task.name = 'task_pool'); got {type(task).__name__}")
  make_baseline("bayes_ridge", task)  # the base's prior and noise give ridge its λ


def bayes_distances(learner: Learner, params: Params, pool: TaskFamily, points: int, *,
                    num_prompts: int, seed: int, batch_size: int) -> dict[str, Any]:
  """{split: {"dmmse" | "ridge": {"by_position": [points], "mean": float}}} for the pool's
  "pretrain" and "latent" prompts (the same prompts for the model and both predictors)."""
  check_pool(pool)
  out = {}
  for split, family in pool.held_out_families().items():
    episode = prompts.held_out_episodes(family, num_prompts, points, seed)
    y_hat = scores.predictions(learner, params, episode, batch_size)
    out[split] = {}
    for name, baseline in BAYES.items():
      y_bayes = scores.predictions(make_baseline(baseline, pool), {}, episode, batch_size)
      by_position = np.sum(np.square(y_hat - y_bayes), axis=-1).mean(axis=0) / pool.dim
      out[split][name] = {"by_position": by_position, "mean": float(by_position.mean())}
  return out


def threshold(sizes: Sequence[int], distances: Sequence[Mapping[str, Any]],
              split: str = "pretrain") -> int | None:
  """The smallest pool size from which the model is closer to ridge than to dMMSE on `split`
  at every larger size too; None if it never is (at the largest size it is closer to dMMSE)."""
  order = np.argsort(sizes)
  found = None
  for i in reversed(order):
    d = distances[i][split]
    if d["ridge"]["mean"] < d["dmmse"]["mean"]:
      found = int(sizes[i])
    else:
      break
  return found
