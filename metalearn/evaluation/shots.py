"""The context/query rule: where a learner makes a k-shot prediction, and which contexts are scored.

A prefix learner (`context_points` None) predicts at every position k from the k pairs before
it. A fixed-context learner (N pairs) predicts every position from its first N pairs, so only
its prediction at position N is a prediction from N examples: at any other k it makes none, and
its later positions are held-out queries after a context of N.
"""

from typing import Iterable, Protocol

import numpy as np

from metalearn.tasks import TaskFamily


class TakesContext(Protocol):
  """A learner, or anything that names one's context (a comparison's entry)."""

  @property
  def context_points(self) -> int | None: ...


def predicts_at(learner: TakesContext, shots: int) -> bool:
  """Whether the learner makes a k-shot prediction at position k = `shots`."""
  return learner.context_points in (None, shots)


def valid_positions(learner: TakesContext, points: int) -> np.ndarray:
  """[points] bool: the positions at which the learner's prediction is a k-shot prediction."""
  return np.array([predicts_at(learner, k) for k in range(points)])


def check_predicts_at(learner: TakesContext, shots: int,
                      otherwise: str = "allowed here: {shots}") -> None:
  """Raises ValueError unless the learner predicts from `shots` examples; `otherwise` ends the
  message, with {context} (the learner's context size) and {shots} filled in."""
  if not predicts_at(learner, shots):
    raise ValueError(f"the learner adapts on {learner.context_points} context points; "
                     + otherwise.format(context=learner.context_points, shots=shots))


def run_context(learner: TakesContext, task: TaskFamily) -> int | None:
  """The context after which a run of `learner` on `task` scores its queries: the learner's
  own fixed context, else the support set of a task whose episodes open with one; None: the
  run is scored by its error after every number of examples instead."""
  return learner.context_points or task.context_points


def query_contexts(learners: Iterable[TakesContext], task: TaskFamily) -> tuple[int, ...]:
  """The context sizes whose queries are scored when several learners are compared, as a run's
  own evaluation scores them: each fixed-context learner's, and the task's support set."""
  contexts = {l.context_points for l in learners if l.context_points is not None}
  if task.context_points is not None:
    contexts.add(task.context_points)
  return tuple(sorted(contexts))
