"""How far apart two learners' predictions for the same query are, by number of examples
(Akyürek et al. 2022's squared prediction difference, SPD)."""

from typing import Any, Sequence

import numpy as np

from metalearn.comparison import plots, report
from metalearn.comparison.entries import Entry, pair_name, pairs
from metalearn.comparison.requirements import pair_predicting_at, two_learners
from metalearn.comparison.unit import Context, Section, Unit, reported_shots
from metalearn.evaluation.shots import query_contexts, valid_positions


def prediction_differences(entries: Sequence[Entry], predicted: dict[str, np.ndarray]
                           ) -> dict[str, np.ndarray]:
  """Per pair, the mean over prompts of Σ_out (ŷ_a − ŷ_b)² by number of examples [points]
  (Akyürek et al. 2022's SPD); NaN where either makes no k-shot prediction."""
  table = {}
  for a, b in pairs(entries):
    y_a, y_b = predicted[a.name], predicted[b.name]
    both = valid_positions(a, y_a.shape[1]) & valid_positions(b, y_a.shape[1])
    table[pair_name(a.name, b.name)] = np.where(
        both, np.sum(np.square(y_a - y_b), axis=-1).mean(axis=0), np.nan)
  return table


def predictions(ctx: Context) -> tuple[Any, Section]:
  table = prediction_differences(ctx.entries, ctx.predictions)
  names = list(table)
  rows = [[k] + [table[n][k] for n in names] for k in range(ctx.episode.num_points)]
  report.write_table(ctx.directory, "prediction_difference", ["examples"] + names, rows, table)
  plots.by_shots(table, f"{ctx.directory}/prediction_difference.png",
                 "mean Σ (ŷ_a − ŷ_b)²", "Squared prediction difference", log=True)
  shown = reported_shots(ctx.task.dim, ctx.episode.num_points,
                         query_contexts(ctx.entries, ctx.task))
  text = ("Mean squared difference of two learners' predictions for the same query after k "
          "examples (Akyürek et al.'s SPD).\n\n" + report.markdown_table(
              ["pair"] + [f"k = {k}" for k in shown], [[n] + [table[n][k] for k in shown]
                                                        for n in names]))
  return table, ("Prediction difference", text, "prediction_difference.png")


UNIT = Unit("predictions", predictions,
            (two_learners, pair_predicting_at(lambda s: range(s.points), "any")))
