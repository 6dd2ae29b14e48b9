"""Requirements and settings checks that several analyses share (see `unit.Unit`)."""

import itertools
from typing import Callable, Sequence

import jax

from metalearn.comparison.settings import CompareSettings
from metalearn.comparison.unit import Requirement, Subject
from metalearn.evaluation.shots import predicts_at
from metalearn.learners.capabilities import exposes
from metalearn.tasks import TaskFamily


def two_learners(s: Subject) -> str | None:
  if len(s.entries) < 2:
    return "it compares learners in pairs and there is only one"
  return None


def pair_predicting_at(shots: Callable[[Subject], Sequence[int]], what: str) -> Requirement:
  """Two learners that both predict after one of `shots(subject)` examples (`what` names them)."""
  def requirement(s: Subject) -> str | None:
    if not any(predicts_at(a, k) and predicts_at(b, k) for a, b in
               itertools.combinations(s.entries.values(), 2) for k in shots(s)):
      return (f"no two learners predict after the same number of examples among {what} "
              "(a fixed-context learner predicts after its context size only)")
    return None
  return requirement


def true_weights(s: Subject) -> str | None:
  # The shapes of one draw, not a draw: the task's episodes say whether they hold w.
  info = jax.eval_shape(lambda: s.task.sample(jax.random.PRNGKey(0), 1, s.points)).info
  if "w" not in info:
    return f"the task {type(s.task).__name__} has no true linear weights"
  return None


def run_exposing(hidden_state: str, otherwise: str) -> Requirement:
  """Some run's learner exposes `hidden_state` ("residual", ...: capabilities.HiddenStates);
  `otherwise` is the reason when none does."""
  def requirement(s: Subject) -> str | None:
    if not any(exposes(l, hidden_state) for l in s.run_learners):
      return otherwise
    return None
  return requirement


def default_context_fits(field: str) -> Requirement:
  """A context left to its default must leave a query; a value given is checked by
  `check_context_fits`."""
  def requirement(s: Subject) -> str | None:
    context = s.context(field)
    if getattr(s.settings, field) is None and not context < s.points:
      return (f"its default {field}={context} leaves no query in prompts of {s.points} "
              "points")
    return None
  return requirement


def check_context_fits(field: str) -> Callable[[CompareSettings, TaskFamily, int], None]:
  """A settings check: the context of `field` leaves a query in prompts of `points` points."""
  def check(settings: CompareSettings, task: TaskFamily, points: int) -> None:
    context = settings.context(field, task.dim, task.context_points)
    if not context < points:
      raise ValueError(f"compare {field}={context} leaves no query in prompts of {points} "
                       f"points; allowed: 1 to {points - 1}")
  return check
