"""Held-out evaluation: normalised error against the number of in-context examples."""

import csv
import functools
import json
import os
from typing import Mapping

import jax
import numpy as np

from metalearn.episode import Episode
from metalearn.learners import Learner
from metalearn.learners.base import Params
from metalearn.tasks import TaskFamily


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def held_out_episodes(task: TaskFamily, num_prompts: int, points: int, seed: int) -> Episode:
  """The fixed evaluation prompts: every learner is scored on these same ones."""
  return task.sample(jax.random.PRNGKey(seed), num_prompts, points)


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
  chunks = []
  for start in range(0, episode.batch_size, batch_size):
    chunk = jax.tree.map(lambda a: a[start:start + batch_size], episode)
    chunks.append(np.asarray(_normalised_errors(learner, task, params, chunk)))
  return np.concatenate(chunks)


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
