"""`compare`: runs and baselines on the same held-out prompts, written up as one report."""

import logging
from typing import Any, Mapping, NamedTuple, Sequence

from metalearn.comparison import report
from metalearn.comparison.entries import check_runs, load_entries
from metalearn.comparison.registry import UNITS
from metalearn.comparison.settings import CompareSettings
from metalearn.comparison.unit import Context, Subject, Unit
from metalearn.engine.experiment import Experiment
from metalearn.engine.workdir import WorkdirLock
from metalearn.evaluation import prompts
from metalearn.learners import make_baseline
from metalearn.tasks import TaskFamily

log = logging.getLogger(__name__)


class Plan(NamedTuple):
  """What `plan` settled before any checkpoint is read."""

  experiments: dict[str, Experiment]
  task: TaskFamily               # the runs' shared held-out task
  points: int                    # points per held-out prompt
  units: tuple[Unit, ...]        # the analyses to run, in report order
  skipped: dict[str, str]        # analysis -> why it does not apply (default analyses only)
  shots: tuple[int, ...]         # example counts of the weight and sensitivity tables


def plan(runs: Mapping[str, str], baselines: Sequence[str], settings: CompareSettings,
         units: Sequence[Unit] = UNITS) -> Plan:
  """Everything checked before a checkpoint is read, for the analyses among `units`.

  Raises ValueError for runs that cannot be compared, unknown baselines, prompts longer than
  a run can take (or, for few-shot episodes, of any length but the task's own), analyses
  asked for that do not apply (saying why) and settings an analysis to run cannot work with.
  With `settings.analyses` None, the analyses that do not apply are left out and named in
  `skipped` with their reasons.
  """
  experiments, task, points = check_runs(runs, baselines)
  if settings.points is not None:
    if settings.points > points:
      raise ValueError(f"compare points={settings.points} is more than the runs were trained "
                       f"on; allowed: at most {points}")
    points = settings.points
  for name, experiment in experiments.items():
    experiment.learner.check_episode(points, task.dim)
  task.check_points(points)
  entries = {variant: learner for name, experiment in experiments.items()
             for variant, learner in experiment.learner.evaluation_variants(name).items()}
  entries.update({name: make_baseline(name, task) for name in baselines})
  subject = Subject(entries, tuple(e.learner for e in experiments.values()), task, points,
                    settings)
  if settings.analyses is None:
    reasons = {unit.name: unit.why_not(subject) for unit in units}
    chosen = {name for name, reason in reasons.items() if reason is None}
    skipped = {name: reason for name, reason in reasons.items() if reason is not None}
  else:
    chosen, skipped = set(settings.analyses), {}
    for unit in units:
      reason = unit.why_not(subject) if unit.name in chosen else None
      if reason:
        raise ValueError(f"compare analysis {unit.name!r} does not apply: {reason}")
  to_run = tuple(unit for unit in units if unit.always or unit.name in chosen)
  settings.default_shots(task.dim, points)  # raises for shots past the prompt
  for unit in to_run:
    unit.check_settings(settings, task, points)
  return Plan(experiments, task, points, to_run, skipped, subject.shots)


def compare(runs: Mapping[str, str], baselines: Sequence[str], report_dir: str,
            settings: CompareSettings = CompareSettings(),
            units: Sequence[Unit] = UNITS) -> dict[str, Any]:
  """Scores every run (at its latest checkpoint) and baseline on the same held-out prompts.

  `runs` maps a display name to a run's work directory; `baselines` are names from
  `metalearn.learners.baseline_names()`. Writes to `report_dir` (new or empty) one CSV, JSON
  and PNG per analysis as each finishes, then `summary.md`; returns the results by analysis.
  The analyses are those of `units` (every one, `registry.UNITS`, by default) that apply, or
  that `settings.analyses` names. Runs that cannot be compared, and any other bad input, raise
  before anything is written.
  """
  report.check_report_dir(report_dir)
  experiments, task, points, to_run, skipped, shots = plan(runs, baselines, settings, units)
  for analysis, reason in skipped.items():
    log.info("compare skips %r: %s", analysis, reason)
  entries = load_entries(runs, experiments, baselines, task)
  # Claimed only now, after every check: a refused compare leaves no directory behind.
  with WorkdirLock(report_dir, "report directory"):
    report.check_report_dir(report_dir)  # another compare may have written it meanwhile
    episode = prompts.held_out_episodes(task, settings.num_prompts, points, settings.seed)
    context = Context(entries, task, episode, settings, report_dir, shots)
    results, parts = {}, []
    for unit in to_run:
      results[unit.name], part = unit.run(context)
      parts.append(part)
    names = ", ".join(e.name for e in entries)
    report.write_summary(report_dir, f"Comparison: {names}", [(
        "Setting", f"{settings.num_prompts} held-out prompts of {points} points from "
        f"{type(task).__name__} (d = {task.dim}), seed {settings.seed}; runs: "
        + ", ".join(f"`{name}` = `{path}`" for name, path in runs.items())
        + (f"; baselines: {', '.join(baselines)}" if baselines else "") + ".", "")]
        + _skipped_part(skipped) + parts)
    return results


def _skipped_part(skipped: Mapping[str, str]) -> list[tuple[str, str, str]]:
  if not skipped:
    return []
  return [("Analyses that do not apply", "\n".join(f"- `{analysis}`: {reason}"
                                                   for analysis, reason in skipped.items()), "")]
