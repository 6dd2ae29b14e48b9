"""`compare`: runs and baselines on the same held-out prompts, written up as one report."""

import os
from typing import Any, Mapping, Sequence

import jax

from metalearn import evaluate
from metalearn.comparison import report, sections
from metalearn.comparison.entries import check_runs, load_entries
from metalearn.comparison.settings import ANALYSES, CompareSettings
from metalearn.experiment import Experiment
from metalearn.learners.gd_layers import GDLayers
from metalearn.learners.transformer import Transformer
from metalearn.tasks import TaskFamily
from metalearn.tasks.linear import LinearRegression, SparseLinearRegression


def _knows_weights(task: TaskFamily) -> bool:
  info = jax.eval_shape(lambda: task.sample(jax.random.PRNGKey(0), 1, 2)).info
  return "w" in info


def _why_not(analysis: str, experiments: Mapping[str, Experiment], task: TaskFamily,
             num_entries: int) -> str | None:
  """None if the analysis applies to these runs, else the reason it does not."""
  learners = [e.learner for e in experiments.values()]
  if analysis in ("predictions", "sensitivity") and num_entries < 2:
    return "it compares learners in pairs and there is only one"
  if analysis in ("implicit_weights", "probing") and not _knows_weights(task):
    return f"the task {type(task).__name__} has no true linear weights"
  if analysis == "shifts" and not isinstance(task, (LinearRegression, SparseLinearRegression)):
    return f"shifts are defined for linear regression, not {type(task).__name__}"
  if analysis == "shifts" and getattr(task, "x_distribution", "normal") != "normal":
    return (f"shifts are defined for x ~ N(0, I) (Garg et al.); the task draws x from "
            f"{task.x_distribution!r}")
  if analysis == "probing" and not any(hasattr(l, "intermediates") for l in learners):
    return "no run's learner exposes hidden states (a transformer run does)"
  if analysis == "icl_vs_finetune" and not any(isinstance(l, Transformer) for l in learners):
    return "no run trained a transformer"
  if analysis == "interpolation" and sum(
      isinstance(l, GDLayers) and not (l.layer_norm or l.mlp or l.softmax)
      for l in learners) < 2:
    return "it needs two runs of plain GD-layer networks (no layer_norm, mlp or softmax)"
  return None


def plan(runs: Mapping[str, str], baselines: Sequence[str], settings: CompareSettings
         ) -> tuple[dict[str, Experiment], TaskFamily, int, tuple[str, ...]]:
  """Everything checked before a checkpoint is read: (experiments, task, points, analyses).

  Raises ValueError for runs that cannot be compared, unknown baselines, prompts longer than
  a run can take, and analyses asked for that do not apply (saying why).
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
  num_entries = len(baselines) + sum(len(e.learner.evaluation_variants(n))
                                     for n, e in experiments.items())
  if settings.analyses is None:
    analyses = tuple(a for a in ANALYSES if _why_not(a, experiments, task, num_entries) is None)
  else:
    analyses = tuple(a for a in ANALYSES if a in settings.analyses)
    for analysis in analyses:
      reason = _why_not(analysis, experiments, task, num_entries)
      if reason:
        raise ValueError(f"compare analysis {analysis!r} does not apply: {reason}")
  _check_contexts(settings, task.dim, points, analyses)
  return experiments, task, points, analyses


def _check_contexts(settings: CompareSettings, dim: int, points: int,
                    analyses: Sequence[str]) -> None:
  settings.default_shots(dim, points)  # raises for shots past the prompt
  for analysis, field, default in (("probing", "probe_context", dim),
                                   ("icl_vs_finetune", "icl_context", dim)):
    context = getattr(settings, field) or default
    if analysis in analyses and not context < points:
      raise ValueError(f"compare {field}={context} leaves no query in prompts of {points} "
                       f"points; allowed: 1 to {points - 1}")
  shift_context = settings.shift_context or max(dim // 2, 1)
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
  experiments, task, points, analyses = plan(runs, baselines, settings)
  entries = load_entries(runs, experiments, baselines, task)
  os.makedirs(report_dir, exist_ok=True)
  episode = evaluate.held_out_episodes(task, settings.num_prompts, points, settings.seed)
  contexts = tuple(e.context_points for e in entries if e.context_points is not None)
  context = sections.Context(entries, task, episode, settings, report_dir,
                             settings.default_shots(task.dim, points, contexts))
  results, parts = {}, []
  for analysis in ("errors",) + tuple(a for a in analyses if a != "errors"):
    results[analysis], part = sections.SECTIONS[analysis](context)
    parts.append(part)
  names = ", ".join(e.name for e in entries)
  report.write_summary(report_dir, f"Comparison: {names}", [(
      "Setting", f"{settings.num_prompts} held-out prompts of {points} points from "
      f"{type(task).__name__} (d = {task.dim}), seed {settings.seed}; runs: "
      + ", ".join(f"`{name}` = `{path}`" for name, path in runs.items())
      + (f"; baselines: {', '.join(baselines)}" if baselines else "") + ".", "")] + parts)
  return results
