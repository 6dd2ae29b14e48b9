"""The error of every learner against the number of in-context examples, and the metrics of
the queries after each context that a run's own evaluation scores; `headline` prints them."""

from typing import Any

import numpy as np

from metalearn.comparison import plots, report
from metalearn.comparison.unit import Context, Section, Unit, reported_shots
from metalearn.evaluation import scores, shots
from metalearn.evaluation.intervals import bootstrap_curve


def errors(ctx: Context) -> tuple[Any, Section]:
  """Normalised error by number of examples for every entry; where a learner takes a fixed
  context, or the task's episodes open with a support set, also the metrics of the queries
  after that context (each predicted from it alone), as the run's own evaluation gives them:
  results[entry] = {mean, low, high [points], queries: {context: {metric: value}}}."""
  s = ctx.settings
  contexts = shots.query_contexts(ctx.entries, ctx.task)
  evaluation = scores.evaluate_learners({e.name: (e.learner, e.params) for e in ctx.entries},
                                        ctx.task, ctx.episode, s.batch_size, contexts=contexts,
                                        predicted=ctx.predictions)
  curves = {name: bootstrap_curve(per_prompt, s.bootstrap_resamples, s.seed)
            for name, per_prompt in evaluation.normalised_errors.items()}
  names = list(curves)
  header = ["examples"] + [f"{n}{suffix}" for n in names for suffix in ("", "_low", "_high")]
  rows = [[k] + [curves[n][part][k] for n in names for part in ("mean", "low", "high")]
          for k in range(ctx.episode.num_points)]
  queries = evaluation.query_tables
  for name in names:
    curves[name]["queries"] = {c: table[name] for c, table in queries.items() if name in table}
  report.write_table(ctx.directory, "errors", header, rows, curves)
  plots.error_curves(curves, f"{ctx.directory}/errors.png", ctx.task.dim,
                     f"{type(ctx.task).__name__}, d = {ctx.task.dim}")
  shown = reported_shots(ctx.task.dim, ctx.episode.num_points, contexts)
  text = ("Normalised error (the zero predictor scores 1) against the number of in-context "
          "examples k, mean over the held-out prompts [90% bootstrap interval]; all of it in "
          "`errors.csv`. A fixed-context learner predicts after its context size only.\n\n"
          + report.markdown_table(["learner"] + [f"k = {k}" for k in shown],
                                  [[n] + [_with_interval(curves[n], k) for k in shown]
                                   for n in names]))
  for context, table in queries.items():
    text += "\n\n" + _query_text(context, ctx.episode.num_points - context, table)
  if queries:
    _write_query_table(ctx.directory, queries)
  return curves, ("Error against the number of examples", text, "errors.png")


def _query_text(context: int, num_queries: int, table: dict[str, dict[str, float]]) -> str:
  metrics = [m for m in next(iter(table.values())) if not m.endswith("_ci95")]
  return (f"The {num_queries} queries after the first {context} examples, each predicted "
          f"from those {context} alone (as a run's own evaluation scores them), mean ± 95% "
          "over prompts; all of it in `query_errors.csv`.\n\n" + report.markdown_table(
              ["learner"] + metrics, [[name] + [f"{row[m]:.3f} ± {row[m + '_ci95']:.3f}"
                                                for m in metrics] for name, row in table.items()]))


def _write_query_table(directory: str, queries: dict[int, dict[str, dict[str, float]]]) -> None:
  columns = list(dict.fromkeys(m for table in queries.values() for row in table.values()
                               for m in row))
  rows = [[context, name] + [row.get(m, float("nan")) for m in columns]
          for context, table in queries.items() for name, row in table.items()]
  report.write_table(directory, "query_errors", ["context", "learner"] + columns, rows, queries)


def _with_interval(curve, k) -> str:
  if not np.isfinite(curve["mean"][k]):
    return "–"
  return f"{curve['mean'][k]:.3f} [{curve['low'][k]:.3f}, {curve['high'][k]:.3f}]"


def headline(curves: dict[str, dict[str, Any]], most: int = 7) -> list[str]:
  """One line per entry of an `errors` result for a terminal: its normalised error at up to
  `most` numbers of examples k (where it predicts), then its query metrics per context."""
  lines = []
  for name, curve in curves.items():
    finite = [k for k, v in enumerate(curve["mean"]) if np.isfinite(v)]
    if len(finite) == 1 and finite[0] in curve.get("queries", {}):
      finite = []  # a fixed-context learner: its query metrics below say it all
    if len(finite) > most:
      finite = [finite[i] for i in sorted(set(np.linspace(0, len(finite) - 1, most)
                                              .round().astype(int)))]
    parts = [f"normalised error by examples k: "
             + ", ".join(f"k={k} {curve['mean'][k]:.3f}" for k in finite)] if finite else []
    for context, row in curve.get("queries", {}).items():
      parts.append(f"queries after {context} examples: " + ", ".join(
          f"{m} {row[m]:.3f} ± {row[m + '_ci95']:.3f}" for m in row if not m.endswith("_ci95")))
    lines.append(f"{name}: " + "; ".join(parts))
  return lines


# Every report opens with it, whatever analyses are asked for.
UNIT = Unit("errors", errors, always=True)
