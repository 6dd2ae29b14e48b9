"""`compare`: runs and baselines on the same held-out prompts, written up as one report."""

import logging
from typing import Any, Mapping, NamedTuple, Sequence

from metalearn.evaluation import evaluate
from metalearn.comparison import report, sections
from metalearn.comparison.applicability import Subject, why_not
from metalearn.comparison.entries import check_runs, load_entries
from metalearn.comparison.settings import ANALYSES, CompareSettings
from metalearn.engine.experiment import Experiment
from metalearn.learners import make_baseline
from metalearn.tasks import TaskFamily
from metalearn.engine.workdir import WorkdirLock

log = logging.getLogger(__name__)


class Plan(NamedTuple):
  """What `plan` settled before any checkpoint is read."""

  experiments: dict[str, Experiment]
  task: TaskFamily               # the runs' shared held-out task
  points: int                    # points per held-out prompt
  analyses: tuple[str, ...]      # the analyses to run, in report order
  skipped: dict[str, str]        # analysis -> why it does not apply (default analyses only)
  shots: tuple[int, ...]         # example counts of the weight and sensitivity tables


def plan(runs: Mapping[str, str], baselines: Sequence[str], settings: CompareSettings) -> Plan:
  """Everything checked before a checkpoint is read.

  Raises ValueError for runs that cannot be compared, unknown baselines, prompts longer than
  a run can take (or, for few-shot episodes, of any length but the task's own), and analyses
  asked for that do not apply (saying why). With `settings.analyses` None, the analyses that
  do not apply are left out and named in `skipped` with their reasons.
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
    reasons = {analysis: why_not(analysis, subject) for analysis in ANALYSES}
    analyses = tuple(a for a, reason in reasons.items() if reason is None)
    skipped = {a: reason for a, reason in reasons.items() if reason is not None}
  else:
    analyses, skipped = tuple(a for a in ANALYSES if a in settings.analyses), {}
    for analysis in analyses:
      reason = why_not(analysis, subject)
      if reason:
        raise ValueError(f"compare analysis {analysis!r} does not apply: {reason}")
  _check_contexts(settings, task, points, analyses)
  return Plan(experiments, task, points, analyses, skipped, subject.shots)


def _check_contexts(settings: CompareSettings, task: TaskFamily, points: int,
                    analyses: Sequence[str]) -> None:
  dim = task.dim
  settings.default_shots(dim, points)  # raises for shots past the prompt
  for analysis, field in (("probing", "probe_context"), ("icl_vs_finetune", "icl_context")):
    context = settings.context(field, dim, task.context_points)
    if analysis in analyses and not context < points:
      raise ValueError(f"compare {field}={context} leaves no query in prompts of {points} "
                       f"points; allowed: 1 to {points - 1}")
  shift_context = settings.context("shift_context", dim)
  if "shifts" in analyses and not shift_context < dim:
    raise ValueError(f"compare shift_context={shift_context} leaves no direction orthogonal "
                     f"to the context in dimension {dim}; allowed: 1 to {dim - 1}")


def compare(runs: Mapping[str, str], baselines: Sequence[str], report_dir: str,
            settings: CompareSettings = CompareSettings()) -> dict[str, Any]:
  """Scores every run (at its latest checkpoint) and baseline on the same held-out prompts.

  `runs` maps a display name to a run's work directory; `baselines` are names from
  `metalearn.learners.baseline_names()`. Writes to `report_dir` (new or empty) one CSV, JSON
  and PNG per analysis as each finishes, then `summary.md`; returns the results by analysis.
  Runs that cannot be compared, and any other bad input, raise before anything is written.
  """
  report.check_report_dir(report_dir)
  experiments, task, points, analyses, skipped, shots = plan(runs, baselines, settings)
  for analysis, reason in skipped.items():
    log.info("compare skips %r: %s", analysis, reason)
  entries = load_entries(runs, experiments, baselines, task)
  # Claimed only now, after every check: a refused compare leaves no directory behind.
  with WorkdirLock(report_dir, "report directory"):
    report.check_report_dir(report_dir)  # another compare may have written it meanwhile
    episode = evaluate.held_out_episodes(task, settings.num_prompts, points, settings.seed)
    context = sections.Context(entries, task, episode, settings, report_dir, shots)
    results, parts = {}, []
    for analysis in ("errors",) + tuple(a for a in analyses if a != "errors"):
      results[analysis], part = sections.SECTIONS[analysis](context)
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
