"""When each analysis of a report applies: its requirements, declared beside its name.

A requirement looks only at what is known before any checkpoint is read (the entries'
learners, the shared held-out task, the prompt length, the settings) and returns None when
it is met, else the reason it is not, in words a report prints. `compare` runs every analysis
whose requirements are met and names the others with their reasons; an analysis asked for
by name whose requirements are not met is refused before anything is written.
"""

import dataclasses
import itertools
from typing import Callable, Mapping, Sequence

import jax

from metalearn.comparison.measures import predicts_at
from metalearn.comparison.settings import CompareSettings
from metalearn.learners import Learner
from metalearn.learners.gd_layers import GDLayers
from metalearn.learners.transformer import Transformer
from metalearn.tasks import TaskFamily
from metalearn.tasks.linear import LinearRegression, SparseLinearRegression


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


Requirement = Callable[[Subject], str | None]


def _pairs(s: Subject) -> str | None:
  if len(s.entries) < 2:
    return "it compares learners in pairs and there is only one"
  return None


def _pair_predicting_at(shots: Callable[[Subject], Sequence[int]], what: str) -> Requirement:
  def requirement(s: Subject) -> str | None:
    if not any(predicts_at(a, k) and predicts_at(b, k) for a, b in
               itertools.combinations(s.entries.values(), 2) for k in shots(s)):
      return (f"no two learners predict after the same number of examples among {what} "
              "(a fixed-context learner predicts after its context size only)")
    return None
  return requirement


def _some_learner_predicting_at_shots(s: Subject) -> str | None:
  if not any(predicts_at(l, k) for l in s.entries.values() for k in s.shots):
    return (f"no learner predicts after any of shots={list(s.shots)} examples (fixed-context "
            f"learners: after {sorted(set(s.contexts))} only)")
  return None


def _true_weights(s: Subject) -> str | None:
  info = jax.eval_shape(lambda: s.task.sample(jax.random.PRNGKey(0), 1, s.points)).info
  if "w" not in info:
    return f"the task {type(s.task).__name__} has no true linear weights"
  return None


def _linear_regression(s: Subject) -> str | None:
  if not isinstance(s.task, (LinearRegression, SparseLinearRegression)):
    return f"shifts are defined for linear regression, not {type(s.task).__name__}"
  x_distribution = getattr(s.task, "x_distribution", "normal")  # sparse: always normal
  if x_distribution != "normal":
    return (f"shifts are defined for x ~ N(0, I) (Garg et al.); the task draws x from "
            f"{x_distribution!r}")
  return None


def _shift_context(s: Subject) -> str | None:
  context = s.context("shift_context")
  if s.settings.shift_context is None and not context < s.task.dim:
    return (f"its default shift_context={context} leaves no direction orthogonal to the "
            f"context in dimension {s.task.dim}")
  if not any(predicts_at(l, context) for l in s.entries.values()):
    return (f"no learner predicts after shift_context={context} examples (fixed-context "
            f"learners: after {sorted(set(s.contexts))} only)")
  return None


def _default_context_fits(field: str) -> Requirement:
  """A context left to its default must leave a query; a value given is checked by `plan`."""
  def requirement(s: Subject) -> str | None:
    context = s.context(field)
    if getattr(s.settings, field) is None and not context < s.points:
      return (f"its default {field}={context} leaves no query in prompts of {s.points} "
              "points")
    return None
  return requirement


def _hidden_states(s: Subject) -> str | None:
  if not any(hasattr(l, "intermediates") for l in s.run_learners):
    return "no run's learner exposes hidden states (a transformer run does)"
  return None


def _transformer(s: Subject) -> str | None:
  if not any(isinstance(l, Transformer) for l in s.run_learners):
    return "no run trained a transformer"
  return None


def _two_plain_gd_networks(s: Subject) -> str | None:
  if sum(isinstance(l, GDLayers) and not (l.layer_norm or l.mlp or l.softmax)
         for l in s.run_learners) < 2:
    return "it needs two runs of plain GD-layer networks (no layer_norm, mlp or softmax)"
  return None


# One entry per analysis of settings.ANALYSES (a test holds them equal).
REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "errors": (),
    "predictions": (_pairs, _pair_predicting_at(lambda s: range(s.points), "any")),
    "implicit_weights": (_true_weights, _some_learner_predicting_at_shots),
    "sensitivity": (_pairs, _pair_predicting_at(lambda s: s.shots, "the shots")),
    "shifts": (_linear_regression, _shift_context),
    "probing": (_true_weights, _hidden_states, _default_context_fits("probe_context")),
    "interpolation": (_two_plain_gd_networks,),
    "icl_vs_finetune": (_transformer, _default_context_fits("icl_context")),
}


def why_not(analysis: str, subject: Subject) -> str | None:
  """None if `analysis` applies to the subject, else the first reason it does not."""
  for requirement in REQUIREMENTS[analysis]:
    reason = requirement(subject)
    if reason:
      return reason
  return None
