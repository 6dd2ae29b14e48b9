"""What an analysis of a report is: a unit that says when it applies, checks its settings, and
computes and writes its part of the report (big_vision's evaluators are such units).

A unit's requirements look only at the `Subject`, what is known before any checkpoint is read,
and each returns None when it is met, else the reason it is not, in words a report prints. Its
`run` reads the `Context`, the loaded entries and the shared held-out prompts, writes its tables
and figure to the report directory, and returns its results and its part of the summary. No
unit reads what another wrote: what several need (every entry's predictions) is computed once,
on first use, by the context.
"""

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from metalearn.comparison.entries import Entry
from metalearn.comparison.settings import CompareSettings
from metalearn.core.episode import Episode
from metalearn.evaluation.scores import predictions
from metalearn.learners import Learner
from metalearn.tasks import TaskFamily

Section = tuple[str, str, str]  # a summary part: heading, text, figure file ("" for none)


@dataclasses.dataclass(frozen=True)
class Subject:
  """What a comparison is about, as far as it is known before any checkpoint is read."""

  entries: Mapping[str, Learner]     # every learner of the report by name: run variants, baselines
  run_learners: tuple[Learner, ...]  # each run's own learner
  task: TaskFamily
  points: int                        # points per held-out prompt
  settings: CompareSettings

  @property
  def contexts(self) -> tuple[int, ...]:
    """The context sizes of the fixed-context entries."""
    return tuple(l.context_points for l in self.entries.values() if l.context_points is not None)

  @property
  def shots(self) -> tuple[int, ...]:
    """The example counts of the weight and sensitivity tables."""
    return self.settings.default_shots(self.task.dim, self.points, self.contexts,
                                       self.task.context_points)

  def context(self, field: str) -> int:
    return self.settings.context(field, self.task.dim, self.task.context_points)


@dataclasses.dataclass
class Context:
  """What every unit's `run` reads: the entries, the shared held-out prompts, where to write."""

  entries: list[Entry]
  task: TaskFamily
  episode: Episode
  settings: CompareSettings
  directory: str
  shots: tuple[int, ...]

  @functools.cached_property
  def predictions(self) -> dict[str, np.ndarray]:
    """Every entry's predictions [prompts, points, out] on the held-out prompts, made once."""
    return {e.name: predictions(e.learner, e.params, self.episode, self.settings.batch_size)
            for e in self.entries}


Requirement = Callable[[Subject], str | None]


def no_settings(settings: CompareSettings, task: TaskFamily, points: int) -> None:
  """The settings check of a unit that reads no setting of its own."""


@dataclasses.dataclass(frozen=True)
class Unit:
  """One analysis of a report."""

  name: str                                        # as in settings.ANALYSES
  run: Callable[[Context], tuple[Any, Section]]    # compute, write; (results, summary part)
  requirements: Sequence[Requirement] = ()         # all must be met for it to apply
  # Raises ValueError for settings given that the unit cannot work with (settings, task,
  # points per prompt), before anything loads.
  check_settings: Callable[[CompareSettings, TaskFamily, int], None] = no_settings
  always: bool = False                             # part of every report, asked for or not

  def why_not(self, subject: Subject) -> str | None:
    """None if the unit applies to the subject, else the first reason it does not."""
    for requirement in self.requirements:
      reason = requirement(subject)
      if reason:
        return reason
    return None


def reported_shots(dim: int, points: int, contexts: Sequence[int] = ()) -> list[int]:
  """The numbers of examples a summary's by-shots table shows: 0, 1, d/2, d, 2d, the last
  position and the given contexts, within the prompt."""
  return sorted({k for k in (0, 1, dim // 2, dim, 2 * dim, points - 1, *contexts)
                 if 0 <= k < points})
