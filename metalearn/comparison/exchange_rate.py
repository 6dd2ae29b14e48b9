"""The exchange rate's report (metalearn/analysis/exchange_grid.py): a table and, per number of
examples k, the fine-tuning error against steps with the in-context error as a line."""

import os
from typing import Any

import numpy as np

from metalearn.comparison import plots, report

HEADER = ["k", "start", "route", "in_context_error", "error_at_budget", "steps_to_match",
          "fine_tune_flops", "break_even_queries"]


def write_exchange_report(result: dict[str, Any], directory: str, title: str) -> list[str]:
  """Writes exchange_rate.{csv,json} and exchange_rate_k<k>.png into `directory`; returns the
  table as markdown lines ("not within the budget" where fine-tuning never matched)."""
  os.makedirs(directory, exist_ok=True)
  rows = [[row[name] for name in HEADER] for row in result["rows"]]
  curves = {f"{k} / {start} / {route}": curve
            for (k, start, route), curve in result["curves"].items()}
  report.write_table(directory, "exchange_rate", HEADER, rows,
                     {"rows": result["rows"], "in_context": result["in_context"],
                      "curves": curves})
  for k, in_context in result["in_context"].items():
    lines = {f"{start}, {route}": curve
             for (kk, start, route), curve in result["curves"].items() if kk == k}
    steps = np.arange(len(next(iter(lines.values()))))
    lines["in context (no training)"] = np.full(len(steps), in_context)
    plots.lines(steps, lines, os.path.join(directory, f"exchange_rate_k{k}.png"),
                "fine-tuning steps on the k examples", "normalised error at the query",
                f"{title}: k = {k}")
  shown = [[row["k"], row["start"], row["route"], f"{row['in_context_error']:.4g}",
            f"{row['error_at_budget']:.4g}",
            "not within the budget" if row["steps_to_match"] is None else row["steps_to_match"],
            "" if row["break_even_queries"] is None else f"{row['break_even_queries']:.3g}"]
           for row in result["rows"]]
  return report.markdown_table(["k", "start", "route", "in context", "fine-tuned at budget",
                                "steps to match", "break-even queries"], shown).splitlines()
