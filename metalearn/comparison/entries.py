"""The learners a comparison scores: trained runs and named baselines, checked to be comparable."""

import dataclasses
import itertools
import os
from typing import Mapping, Sequence

from metalearn.engine import runs as runs_lib
from metalearn.engine.experiment import Experiment
from metalearn.learners import Learner, make_baseline
from metalearn.learners.base import Params
from metalearn.tasks import TaskFamily


@dataclasses.dataclass(frozen=True)
class Entry:
  """One learner in the report: a run's (or a run's evaluation variant's), or a baseline."""

  name: str
  learner: Learner
  params: Params
  run: str | None  # the run's work directory; None for a baseline

  @property
  def context_points(self) -> int | None:
    return self.learner.context_points


def pairs(entries: Sequence[Entry]) -> list[tuple[Entry, Entry]]:
  """Every two entries, in report order: what the pairwise measures compare."""
  return list(itertools.combinations(entries, 2))


def pair_name(a: str, b: str) -> str:
  return f"{a} vs {b}"


def parse_runs(specs: Sequence[str]) -> dict[str, str]:
  """'name=workdir' or 'workdir' (named after its last directory) -> {name: workdir}."""
  named = {}
  for spec in specs:
    name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    name = name or os.path.basename(os.path.normpath(path))
    if not path or not name:
      raise ValueError(f"a run is 'name=workdir' or 'workdir', got {spec!r}")
    if name in named:
      raise ValueError(f"two runs are named {name!r} ({named[name]!r} and {path!r}); "
                       "name them apart with 'name=workdir'")
    named[name] = path
  return named


def _describe(task: TaskFamily) -> str:
  fields = ", ".join(f"{f.name}={getattr(task, f.name)!r}" for f in dataclasses.fields(task))
  return f"{type(task).__name__}({fields})"


def check_runs(runs: Mapping[str, str], baselines: Sequence[str]
               ) -> tuple[dict[str, Experiment], TaskFamily, int]:
  """Builds every run's experiment from its saved config (no checkpoint read, nothing compiled).

  Returns (experiments, the shared held-out task, the fewest points any run trained on).
  Raises ValueError when the runs' held-out tasks differ (input dimension or anything else),
  naming both runs and both tasks, or when a baseline is unknown or does not fit the task.
  """
  if not runs:
    raise ValueError("compare needs at least one run (the held-out task is the runs'); "
                     f"got baselines only: {list(baselines)}")
  experiments = {name: runs_lib.build_experiment(runs_lib.load_config(path))
                 for name, path in runs.items()}
  (first, reference), *rest = experiments.items()
  for name, experiment in rest:
    task = experiment.eval_task
    if task.dim != reference.eval_task.dim:
      raise ValueError(f"runs {first!r} and {name!r} cannot be compared: their inputs have "
                       f"dimension {reference.eval_task.dim} and {task.dim}")
    if task != reference.eval_task:
      raise ValueError(f"runs {first!r} and {name!r} cannot be compared: they are evaluated on "
                       f"different tasks, {_describe(reference.eval_task)} and {_describe(task)}")
  task = reference.eval_task
  clash = sorted(set(baselines) & set(runs))
  if clash:
    raise ValueError(f"runs and baselines share the name(s) {clash}; rename the runs")
  for name in baselines:
    make_baseline(name, task)
  points = min(experiment.points for experiment in experiments.values())
  return experiments, task, points


def load_entries(runs: Mapping[str, str], experiments: Mapping[str, Experiment],
                 baselines: Sequence[str], task: TaskFamily) -> list[Entry]:
  """Every run's learner at its latest checkpoint (one entry per evaluation variant), then
  the baselines, in the order given."""
  entries = []
  for name, path in runs.items():
    _, params, _ = runs_lib.load_run(path, experiments[name])
    for variant, variant_learner in experiments[name].learner.evaluation_variants(name).items():
      entries.append(Entry(variant, variant_learner, params, path))
  entries += [Entry(name, make_baseline(name, task), {}, None) for name in baselines]
  return entries
