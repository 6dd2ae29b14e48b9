"""State against weights: what each learner carries about its context, and how far its
in-context learning reaches on that.

A transformer's memory of its context is its key/value cache, which grows with the prompt; an
LSTM, GRU or state-space model carries a state of fixed size; linear attention and GD-layer
networks a fast-weight matrix (Schlag et al. 2021). Kirsch et al. (2022) found the accessible
state size, not the parameter count, limiting in-context learning. For each learner this gives
its parameters, the floats it carries (`Learner.state_floats`) at the training length and at
a longer one, its error after k examples, and its error curve on prompts longer than it was
trained on, or why it cannot read them (a learned position table ends at max_points).
"""

from typing import Any, Mapping

import numpy as np

from metalearn.core import checks
from metalearn.evaluation import prompts, scores
from metalearn.learners import Learner
from metalearn.learners.base import Params, tree_size
from metalearn.tasks import TaskFamily


def error_curve(learner: Learner, params: Params, task: TaskFamily, points: int, *,
                num_prompts: int, seed: int, batch_size: int) -> np.ndarray:
  """[points]: the mean normalised error after k = 0 .. points − 1 examples on held-out prompts
  of `points` points (NaN where the learner makes no k-shot prediction)."""
  episode = prompts.held_out_episodes(task, num_prompts, points, seed)
  predicted = scores.predictions(learner, params, episode, batch_size)
  return np.nanmean(scores.normalised_errors(learner, task, episode, predicted), axis=0)


def state_table(entries: Mapping[str, tuple[Learner, Params]], task: TaskFamily, *,
                train_points: int, long_points: int, examples: int, num_prompts: int,
                seed: int, batch_size: int) -> dict[str, Any]:
  """Per entry (name -> (learner, params)): a row of parameters, state floats and errors, and
  its error curves at `train_points` and `long_points` (None, with the reason, where it cannot
  read prompts that long). Every entry is scored on the same held-out prompts."""
  for name, value in (("train_points", train_points), ("num_prompts", num_prompts),
                      ("batch_size", batch_size)):
    checks.check_int(f"state table {name}", value, 1, name_kind=False)
  if long_points < train_points:
    raise ValueError(f"state table long_points={long_points} must be at least "
                     f"train_points={train_points}")
  if not 0 <= examples < train_points:
    raise ValueError(f"state table examples={examples}: allowed 0 to {train_points - 1} for "
                     f"prompts of {train_points} points")
  shapes = {n: prompts.held_out_episodes(task, 1, n, seed) for n in (train_points, long_points)}
  rows, curves = [], {}
  for name, (learner, params) in entries.items():
    learner.check_episode(train_points, task.dim)
    score = lambda n: error_curve(learner, params, task, n, num_prompts=num_prompts, seed=seed,
                                  batch_size=batch_size)
    train = score(train_points)
    try:
      learner.check_episode(long_points, task.dim)
      long, refused = score(long_points), None
    except ValueError as error:
      long, refused = None, str(error)
    curves[name] = {"train": train, "long": long}
    rows.append({
        "learner": name, "kind": type(learner).__name__,
        "parameters": tree_size(params),
        "state_floats": learner.state_floats(params, shapes[train_points]),
        "state_floats_long": learner.state_floats(params, shapes[long_points]),
        "error_at_k": float(train[examples]),
        "error_at_last_long": None if long is None else float(long[-1]),
        "long_prompts": refused or f"read at {long_points} points"})
  return {"rows": rows, "curves": curves, "examples": examples, "train_points": train_points,
          "long_points": long_points}
