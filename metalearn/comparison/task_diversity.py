"""The task-diversity distances (metalearn/analysis/task_diversity.py) in a report: every run
against dMMSE and ridge on a pool's own and fresh tasks (a compare analysis), and a sweep's
members against their pool size (launch/task_diversity.py)."""

import os
from typing import Any, Mapping, Sequence

import numpy as np

from metalearn.analysis.task_diversity import bayes_distances, threshold
from metalearn.comparison import plots, report
from metalearn.comparison.unit import Context, Section, Subject, Unit

COLUMNS = [(split, name) for split in ("pretrain", "latent") for name in ("dmmse", "ridge")]
HEADER = [f"{split} to {name}" for split, name in COLUMNS]


def _row(distances: Mapping[str, Any]) -> list[float]:
  return [distances[split][name]["mean"] for split, name in COLUMNS]


def write_sweep_report(sizes: Sequence[int], distances: Sequence[Mapping[str, Any]],
                       directory: str, title: str) -> list[str]:
  """task_diversity.{csv,json} (one row per pool size) and task_diversity.png (the four
  distances against log₂ M, the threshold marked); returns the table and the threshold as
  markdown lines."""
  os.makedirs(directory, exist_ok=True)
  order = np.argsort(sizes)
  rows = [[int(sizes[i])] + _row(distances[i]) for i in order]
  found = threshold(sizes, distances)
  report.write_table(directory, "task_diversity", ["pool size"] + HEADER, rows,
                     {"sizes": [int(sizes[i]) for i in order], "threshold": found,
                      "distances": [distances[i] for i in order]})
  curves = {label: np.array([row[1 + j] for row in rows]) for j, label in enumerate(HEADER)}
  plots.lines(np.log2([row[0] for row in rows]), curves,
              os.path.join(directory, "task_diversity.png"), "log₂ pool size M",
              "squared prediction difference / D", title, log=True,
              vertical=None if found is None else np.log2(found))
  shown = [[f"{row[0]:,}"] + [f"{v:.4g}" for v in row[1:]] for row in rows]
  said = ("never closer to ridge than to dMMSE on the pool's tasks" if found is None else
          f"closer to ridge than to dMMSE on the pool's tasks from M = {found:,} on")
  return report.markdown_table(["M"] + HEADER, shown).splitlines() + ["", f"threshold: {said}"]


def _pool_of_linear_tasks(s: Subject) -> str | None:
  if not getattr(s.task, "is_linear", False):
    return f"the task {type(s.task).__name__} is not a pool of linear_regression tasks"
  return None


def _runs(s: Subject) -> str | None:
  return None if s.run_learners else "there is no trained run to hold to the Bayes predictors"


def task_diversity(ctx: Context) -> tuple[Any, Section]:
  runs = [e for e in ctx.entries if e.run is not None]
  table = {e.name: bayes_distances(e.learner, e.params, ctx.task, ctx.episode.num_points,
                                   num_prompts=ctx.settings.num_prompts, seed=ctx.settings.seed,
                                   batch_size=ctx.settings.batch_size) for e in runs}
  rows = [[name] + _row(d) for name, d in table.items()]
  report.write_table(ctx.directory, "task_diversity", ["learner"] + HEADER, rows, table)
  plots.grouped_bars({row[0]: dict(zip(HEADER, row[1:])) for row in rows},
                     os.path.join(ctx.directory, "task_diversity.png"),
                     "squared prediction difference / D",
                     f"Distance to the Bayes predictors, pool of {ctx.task.size:,} tasks")
  text = ("Mean squared difference per dimension between each run's predictions and those of "
          "dMMSE (the pool's posterior mean) and ridge (fresh tasks' posterior mean), on the "
          "pool's tasks (pretrain) and on fresh ones (latent), over every position "
          "(Raventós et al. 2023).\n\n" + report.markdown_table(["learner"] + HEADER, rows))
  return table, ("Task diversity", text, "task_diversity.png")


UNIT = Unit("task_diversity", task_diversity, (_runs, _pool_of_linear_tasks))
