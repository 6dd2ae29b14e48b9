"""The error of the queries after a context when the prompts are drawn from a shifted
distribution (Garg et al. 2022, §4; the shifts are metalearn/tasks/shifts.py's)."""

from typing import Any

from metalearn.comparison import plots, report
from metalearn.comparison.settings import CompareSettings
from metalearn.comparison.unit import Context, Section, Subject, Unit
from metalearn.evaluation import scores
from metalearn.evaluation.intervals import mean_and_interval
from metalearn.evaluation.shots import predicts_at
from metalearn.tasks import TaskFamily
from metalearn.tasks import shifts as shifts_lib


def _linear_regression(s: Subject) -> str | None:
  if not shifts_lib.wraps(s.task):
    return f"shifts are defined for linear regression, not {type(s.task).__name__}"
  x_distribution = shifts_lib.x_distribution_of(s.task)
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


def _check_settings(settings: CompareSettings, task: TaskFamily, points: int) -> None:
  shift_context = settings.context("shift_context", task.dim)
  if not shift_context < task.dim:
    raise ValueError(f"compare shift_context={shift_context} leaves no direction orthogonal "
                     f"to the context in dimension {task.dim}; allowed: 1 to {task.dim - 1}")


def distribution_shifts(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  context = s.context("shift_context", ctx.task.dim)
  points = context + s.shift_queries
  episode = shifts_lib.shift_episodes(ctx.task, shifts_lib.SHIFTS, s.num_prompts, points,
                                      context, s.seed)
  table = {shift: {} for shift in shifts_lib.SHIFTS}
  intervals = {shift: {} for shift in shifts_lib.SHIFTS}
  for entry in ctx.entries:
    if not predicts_at(entry, context):
      continue
    normalised = scores.query_metrics(entry.learner, entry.params, ctx.task, episode, context,
                                      s.batch_size)["normalised"].mean(axis=1)
    for shift, values in shifts_lib.by_shift(normalised, shifts_lib.SHIFTS).items():
      table[shift][entry.name], intervals[shift][entry.name] = mean_and_interval(values)
  names = list(dict.fromkeys(n for row in table.values() for n in row))
  header = ["shift"] + [f"{n}{suffix}" for n in names for suffix in ("", "_ci95")]
  rows = [[shift] + [v for n in names for v in (table[shift][n], intervals[shift][n])]
          for shift in table]
  report.write_table(ctx.directory, "shifts", header, rows,
                     {"context_points": context, "normalised": table, "ci95": intervals})
  plots.grouped_bars(table, f"{ctx.directory}/shifts.png", "normalised error (± 95%)",
                     f"Queries after {context} examples under distribution shifts", intervals)
  text = (f"Normalised error of {s.shift_queries} queries per prompt after {context} examples "
          "when the prompts are drawn from a shifted distribution (Garg et al. 2022, §4), "
          "mean ± 95% over prompts; all shifts in one batch.\n\n" + report.markdown_table(
              ["shift"] + names, [[shift] + [f"{table[shift][n]:.3f} ± {intervals[shift][n]:.3f}"
                                             for n in names] for shift in table]))
  return {"normalised": table, "ci95": intervals}, ("Distribution shifts", text, "shifts.png")


UNIT = Unit("shifts", distribution_shifts, (_linear_regression, _shift_context), _check_settings)
